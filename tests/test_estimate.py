"""Stage 2's estimate of the truth: per-key spectra fitted through notes, borrowed for keys the
corpus lacks, the grain nearest the estimate, and a refinement that starts at zero and learns."""

import librosa
import numpy as np
import torch

from helpers import tiny_config
from cascade_rms import objective
from model import MEL_FFT, N_KEYS, N_MELS, WELL_HEARD_FRAMES, Cascade, Corpus, NoteSpectra, mel_filterbank


def test_the_mel_filterbank_is_librosas():
    for rate, n_fft, n_mels in ((16000, 512, 64), (8000, 256, 40)):
        ours = mel_filterbank(rate, n_fft, n_mels).numpy()
        np.testing.assert_allclose(ours, librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels), atol=1e-6)


def test_the_fit_recovers_the_spectra_a_recording_was_made_of():
    g = torch.Generator().manual_seed(0)
    bins, T, keys = MEL_FFT // 2 + 1, 400, [40, 44, 47, 52]
    truth = torch.rand(1, bins, N_KEYS + 1, generator=g) ** 4  # sparse-ish spectra, every key its own
    sounding = torch.zeros(1, T, N_KEYS)
    for key in keys:
        sounding[0, :, key] = (torch.rand(T, generator=g) < 0.4).float()
    power = torch.nn.functional.pad(sounding, (0, 1), value=1.0) @ truth.transpose(1, 2)  # (1, T, bins)
    spectra = NoteSpectra(128, 16000).fit(*NoteSpectra.statistics(power, sounding))
    for key in [*keys, N_KEYS]:
        error = (spectra[0, :, key] - truth[0, :, key]).norm() / truth[0, :, key].norm()
        assert error < 0.05, (key, float(error))


def test_a_key_heard_too_little_borrows_the_nearest_well_heard_keys_spectrum_transposed():
    bins = MEL_FFT // 2 + 1
    spectra = torch.zeros(1, bins, N_KEYS, dtype=torch.float64)
    spectra[0, 20, 30] = 1.0  # key 30 (MIDI 51): one partial at bin 20
    heard = torch.zeros(1, N_KEYS, dtype=torch.float64)
    heard[0, 30] = WELL_HEARD_FRAMES
    heard[0, 42] = WELL_HEARD_FRAMES - 1  # heard, but too little
    borrowed = NoteSpectra.borrowed(spectra, heard)
    assert int(borrowed[0, :, 42].argmax()) == 40  # an octave up: twice the frequency
    assert int(borrowed[0, :, 18].argmax()) == 10  # an octave down
    torch.testing.assert_close(borrowed[0, :, 30], spectra[0, :, 30])  # well heard: as fitted
    nothing = torch.zeros_like(heard)
    torch.testing.assert_close(NoteSpectra.borrowed(spectra, nothing), spectra)  # none well heard: as fitted


def corpus_of(mel, allowed=None):
    P = mel.shape[1] - 15
    return Corpus(torch.zeros(1, 16 * (P + 1)), torch.zeros(1, P + 15, 16), torch.zeros(1, P, 12),
                  torch.ones(1, P, dtype=torch.bool) if allowed is None else allowed, mel=mel)


def test_each_chunk_plays_the_grain_nearest_the_estimate_among_those_it_may_play():
    head = Cascade(tiny_config(estimate=True)).eval().stage2.estimator
    g = torch.Generator().manual_seed(1)
    mel = -40 + 10 * torch.randn(1, 200 + 15, N_MELS, generator=g)
    wanted = torch.cat([mel[:, 37:53], mel[:, 120:136]], dim=1) + 0.1 * torch.randn(1, 32, N_MELS, generator=g)
    assert head.nearest(wanted, corpus_of(mel)).tolist() == [[37, 120]]
    allowed = torch.ones(1, 200, dtype=torch.bool)
    allowed[0, 120] = False
    assert head.nearest(wanted, corpus_of(mel, allowed))[0, 1] != 120


def test_the_refinement_starts_at_the_fixed_fit_and_the_estimate_term_teaches_stage_2s_blocks():
    torch.manual_seed(0)
    model = Cascade(tiny_config(sample_rate=8000, estimate=True))
    g = torch.Generator().manual_seed(2)
    x, y = 0.1 * torch.randn(2, 16, 64, generator=g), 0.1 * torch.randn(2, 16, 64, generator=g)
    corpus = model.describe(0.1 * torch.randn(2, 4000, generator=g))
    out, stats = model(x, y, corpus)
    torch.testing.assert_close(stats["estimate"], stats["fitted"])
    truth = stats["fitted"].detach() + 5.0  # a truth 5 dB louder than the fit everywhere
    optimizer = torch.optim.Adam(model.stage2.parameters(), lr=1e-2)
    losses = []
    for step in range(20):
        loss = objective.estimate_loss(model(x, y, corpus)[1]["estimate"], truth)
        optimizer.zero_grad()
        loss.backward()
        # the zero refinement passes the blocks nothing at first; once it has moved, every block weight learns
        assert step == 0 or all(p.grad.abs().sum() > 0 for p in model.stage2.blocks.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], losses


def test_the_true_notes_reach_the_estimate_in_place_of_stage_1s():
    torch.manual_seed(0)
    model = Cascade(tiny_config(sample_rate=8000, estimate=True)).eval()
    g = torch.Generator().manual_seed(3)
    x, y = 0.1 * torch.randn(1, 16, 64, generator=g), 0.1 * torch.randn(1, 16, 64, generator=g)
    t = torch.arange(4000) / 8000
    tone = torch.sin(2 * torch.pi * 277.2 * t) * (t < 0.25)  # key 40 (MIDI 61) in the first half
    material = (0.1 * tone + 0.001 * torch.randn(4000, generator=g))[None]
    sounding = torch.zeros(1, 4000 // 16 + 1, N_KEYS)
    sounding[0, : 2000 // 16, 40] = 1.0
    corpus = model.describe(material, roll=sounding)
    silent, played = torch.zeros(1, 64, N_KEYS), torch.zeros(1, 64, N_KEYS)
    played[0, :, 40] = 1.0
    quiet = model(x, y, corpus, roll=silent)[1]["fitted"]
    loud = model(x, y, corpus, roll=played)[1]["fitted"]
    gain = (loud - quiet)[0, 0]  # key 40's fitted spectrum, in dB above the always-on one
    assert gain.max() > 10.0
    peak = mel_filterbank(8000, MEL_FFT, N_MELS)[int(gain.argmax())].argmax() * 8000 / MEL_FFT
    assert abs(float(peak) - 277.2) < 40  # in the mel band of the tone
