"""cascade_rms/full_rate.py: the full-rate render is the model's output."""

import numpy as np

from helpers import target_files_of
from cascade_rms import data
from model import Cascade, CascadeConfig


def test_the_full_rate_render_is_the_models_output_and_keeps_stereo(tmp_path):
    """Rendered at the model's own rate, the output is the model's to float precision; at
    44.1 kHz, downmixed and resampled back, within -50 dB of it (measured: -67 dB). An
    input's two different channels stay different."""
    import soxr

    from cascade_rms import full_rate
    model = Cascade(CascadeConfig()).eval()
    left, right = data.demo_piece(1, 5.0, 44100), data.demo_piece(3, 5.0, 44100)
    stereo = np.stack([left, right], axis=1).astype(np.float32)
    in_model = soxr.resample(stereo.mean(axis=1), 44100, 16000).astype(np.float32)
    files = {"tgt.flac": (data.demo_piece(2, 3.0, 48000), 48000)}
    for out_rate, tolerance_db in ((16000, -100), (44100, -50)):
        corpus = target_files_of(tmp_path / f"t{out_rate}", files, model, out_rate, 2)
        full_input = stereo if out_rate == 44100 else np.repeat(in_model[:, None], 2, axis=1)
        out, out_model, _, _ = full_rate.Generator(model, corpus, 32000).generate(in_model, full_input, progress=False)
        assert out.shape == full_input.shape
        back = soxr.resample(out.mean(axis=1), out_rate, 16000)[: len(out_model)] if out_rate != 16000 else out.mean(axis=1)
        error_db = 10 * np.log10(np.mean((back - out_model) ** 2) / np.mean(out_model ** 2))
        assert error_db < tolerance_db, (out_rate, error_db)
    # the target is mono here: the channels differ by the input's difference, carried by the residuals
    side, input_side = out[:, 0] - out[:, 1], stereo[:, 0] - stereo[:, 1]
    assert np.corrcoef(side, input_side)[0, 1] > 0.95 and np.abs(side).mean() > 0.01 * np.abs(out).mean()
