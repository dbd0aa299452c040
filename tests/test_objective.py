"""cascade_rms/objective.py: every term is finite on silence and asks for what it says."""

import math

import numpy as np
import pytest
import torch

from helpers import (
    FLOOR,
    demo_validation_pairs,
    loss_weights,
    noise_frames,
    tiny_config,
)
from cascade_rms import baselines, objective, verdict
from model import Cascade, CascadeConfig, MDCTCodec


def test_objective_is_finite_for_silent_inputs_targets_and_outputs():
    torch.manual_seed(0)
    model = Cascade(tiny_config(estimate=True))
    x, y = noise_frames([0.0, 0.3, 1e-9, 0.2], seed=12), noise_frames([0.3, 0.0, 0.2, 0.2], seed=13)
    out, stats = model(x, y)
    out = torch.cat([out[:3], out[3:] * 0.0])  # and a silent output
    weights = loss_weights(recon_weight=0.05, novelty_weight=0.5, harmony_weight=1.0, onsets_weight=1.0)
    rolls = torch.zeros(4, x.shape[2], 88)
    rolls[1, :, 39] = 1.0  # one note where the input plays; none where it is silent
    silence = model.note_spectra.mel_db(model.note_spectra.power(torch.zeros(4, 16 * (x.shape[2] - 1))))
    truth = {"mel": torch.cat([stats["estimate"][:3].detach() + 3.0, silence[3:]])}  # a silent truth too
    loss, terms = objective.objective(out, x, y, MDCTCodec(16), weights, model.config, stats, truth, rolls)
    loss.backward()
    # truth_weight is 0 and pointer_fine off: the loss holds no truth term, so none is reported
    assert set(terms) == {"follow", "sound", "harmony", "onsets", "copy", "novelty", "recon", "estimate", "notes"}
    assert 0.0 < terms["estimate"] < 10.0  # 3 dB off, and finite against silence
    assert terms["onsets"] < 1e3, terms  # a silent input has no onsets: the term stays on the scale of music's
    assert math.isfinite(loss.item()) and all(math.isfinite(v) for v in terms.values())
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name


def test_pearson_matches_numpy_and_is_zero_for_silence():
    import numpy as np
    a, b = torch.randn(3, 16, 20), torch.randn(3, 16, 20)
    b[1] += 2 * a[1]
    expected = [np.corrcoef(a[i].flatten().numpy(), b[i].flatten().numpy())[0, 1] for i in range(3)]
    torch.testing.assert_close(objective.pearson(a, b, FLOOR), torch.tensor(expected, dtype=torch.float32), rtol=1e-4, atol=1e-5)
    assert objective.pearson(torch.zeros(1, 4, 4), b[:1, :4, :4], FLOOR).item() == 0.0


def test_lag_correlation_finds_delayed_copies_in_numpy_and_torch_alike():
    import numpy as np
    audio = np.random.default_rng(1).standard_normal(16000)
    for delay, expected in ((0, 1.0), (4000, 0.75**0.5), (12000, 0.0)):  # 0, 0.25 s (3/4 overlap), 0.75 s (beyond 0.5 s)
        delayed = np.concatenate([np.zeros(delay), audio[: len(audio) - delay]])
        numpy_value = verdict.max_lag_correlation(delayed, audio, 16000)
        torch_value = objective.lag_correlation(torch.from_numpy(delayed)[None], torch.from_numpy(audio)[None], 8000, FLOOR).item()
        assert numpy_value == pytest.approx(torch_value, abs=1e-5)
        assert numpy_value == pytest.approx(expected, abs=0.05), delay


def test_each_loss_term_is_near_zero_for_what_it_asks_for_and_large_for_what_it_rules_out():
    """follow, harmony, onsets: zero for the input itself; sound, recon: zero for the target; copy:
    positive for copies, a delayed copy and the mix, zero for noise and another piece;
    novelty: large for a copy, zero for noise. A flipped sign or hinge fails here."""
    weights = loss_weights(harmony_weight=1.0, onsets_weight=1.0, novelty_weight=1.0, recon_weight=1.0)
    codec, rng = MDCTCodec(128), np.random.default_rng(0)

    def terms(audio, x_in, x_tgt):
        return objective.objective(*(codec.encode(torch.from_numpy(np.asarray(a, dtype=np.float32))[None])
                                     for a in (audio, x_in, x_tgt)), codec, weights, CascadeConfig())[1]

    for x_in, x_tgt, other in demo_validation_pairs(2):
        made = baselines.references(x_in, x_tgt, other, 16000, rng)
        of = {name: terms(audio, x_in, x_tgt) for name, audio in made.items()}
        unlike = ("white noise", "another file")
        assert of["copy of input"]["follow"] < 0.01 and min(of[n]["follow"] for n in unlike) > 1.0
        assert of["copy of input"]["harmony"] < 0.01 and min(of[n]["harmony"] for n in unlike) > 0.2
        assert of["copy of input"]["onsets"] < 0.01 and min(of[n]["onsets"] for n in unlike) > 0.5
        assert of["copy of target"]["sound"] < 0.01 and of["white noise"]["sound"] > 0.3
        assert of["copy of target"]["recon"] < 0.01 and of["white noise"]["recon"] > 1.0
        for name in ("copy of input", "copy of target", "50/50 mix", "target delayed 250 ms"):
            assert of[name]["copy"] > 0.1, name
        for name in ("white noise", "noise, target spectrum", "another file"):
            assert of[name]["copy"] == 0.0, name
        assert of["copy of input"]["novelty"] > 0.4 and of["white noise"]["novelty"] < 0.02
    # onsets are rises: a band level stepping up 20 dB is one, stepping back down is none
    step = torch.tensor([0.0, 0.0, 20.0, 20.0, 0.0, 0.0])[None, :, None].expand(1, 6, 3)
    assert objective.onset_strength(step).tolist() == [[0.0, 6.0, 0.0, 0.0, 0.0]]


def test_the_terms_reported_are_what_the_loss_is_made_of_and_stay_on_musics_scale_on_a_near_silent_target():
    """train.py's step line prints the terms objective() returns: those with a weight, and with
    them the total is their weighted sum. On a near-silent target (recorded music's quiet
    intros) every term stays finite and near its scale on music: recon, relative to the pair's
    level, was 6480.9 relative to the silent target's own power."""
    codec, (x_in, x_tgt, _) = MDCTCodec(128), demo_validation_pairs(1)[0]
    frames = [codec.encode(torch.from_numpy(np.asarray(a, dtype=np.float32))[None]) for a in (x_in, 1e-4 * x_tgt)]
    out = codec.encode(torch.from_numpy(baselines.at_level(x_in[::-1].copy(), x_in, 1e-4 * x_tgt))[None])
    weights = loss_weights(recon_weight=0.5)
    loss, terms = objective.objective(out, *frames, codec, weights, CascadeConfig())
    assert set(terms) == {"follow", "sound", "copy", "recon"}  # train.py's weighted terms, and recon
    assert loss.item() == pytest.approx(sum(getattr(weights, f"{name}_weight") * v for name, v in terms.items()), rel=1e-6)
    assert all(math.isfinite(v) for v in terms.values()) and terms["recon"] < 3.0, terms
    with pytest.raises(ValueError, match="every loss term's weight is 0"):
        objective.objective(out, *frames, codec, loss_weights(follow_weight=0.0, sound_weight=0.0, copy_weight=0.0),
                            CascadeConfig())
