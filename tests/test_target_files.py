"""cascade_rms/target_files.py: a corpus is searched whole, and the copy guard holds in it."""

import os
from dataclasses import replace

import numpy as np
import torch

from helpers import target_files_of
from cascade_rms import data
from model import Cascade, CascadeConfig, MDCTCodec


def test_every_window_draws_on_the_whole_corpus_and_the_copy_guard_holds_in_it(tmp_path):
    """A corpus choice is the clip's own choice when the corpus is the clip's target; a
    tone that only the end of a long target holds is found there, from a folder of two
    files; and with the input itself in the corpus no grain comes from its own moment."""
    model = Cascade(CascadeConfig()).eval()
    D, R, shift = 128, 16, model.config.min_shift_frames
    codec = MDCTCodec(D)
    music = data.demo_piece(5, 2.0, 16000).astype(np.float32)
    target = data.demo_piece(6, 2.0, 16000).astype(np.float32)
    x_in, x_tgt = (codec.encode(torch.from_numpy(a)[None]) for a in (music, target))
    corpus = target_files_of(tmp_path / "same", {"t.wav": (target, 16000)}, model, 16000, 1).corpus
    T = x_in.shape[2]
    with torch.no_grad():
        _, own = model(x_in, x_tgt)
        # the min_shift rule of the clip's target, as the copy guard of a recording at frame R + 2
        _, drawn = model(x_in, x_tgt, replace(corpus, clip_frame=torch.tensor([R + 2])))
    for stage, n_sources in (("grains1", 2), ("grains2", 3)):  # the corpus stands in for the target, frame for frame
        target_frames = own[stage] - (n_sources - 1) * T
        assert torch.equal(drawn[stage] - n_sources * T - (R + 2), target_frames), (stage, drawn[stage], target_frames)

    t = np.arange(4 * 16000) / 16000
    chord = sum(np.sin(2 * np.pi * f * t[:16000]) for f in (523.3, 659.3, 784.0)) * 0.1
    long_target = data.demo_piece(7, 4.0, 16000) * 0.3
    long_target[3 * 16000 :] = chord  # the tone lives in the last second only
    files = {"a.wav": (data.demo_piece(8, 3.0, 16000), 16000), "b.wav": (long_target.astype(np.float32), 16000)}
    folder = target_files_of(tmp_path / "folder", files, model, 16000, 1)
    assert [os.path.basename(r.path) for r in folder.recordings] == ["a.wav", "b.wav"]
    x = codec.encode(torch.from_numpy(np.resize(chord, 32000).astype(np.float32))[None])
    with torch.no_grad():
        _, stats = model(x, codec.encode(torch.from_numpy(long_target[:32000].astype(np.float32))[None]), folder.corpus)
    chunks = stats["grains2"][0, 2:-2, 0] - 3 * x.shape[2]  # corpus frames; the chunks clear of the clip's edges
    places = [folder.locate(int(p)) for p in chunks]
    assert all(os.path.basename(r.path) == "b.wav" and 3 * 16000 <= frame * D < 4 * 16000 for r, frame in places), places

    song = data.demo_piece(9, 6.0, 16000).astype(np.float32)
    mine = target_files_of(tmp_path / "mine", {"song.wav": (song, 16000)}, model, 16000, 1, clip=song)
    assert mine.clip_frame == R + 2
    for start in (0, 16000, 32000):
        x = codec.encode(torch.from_numpy(song[start : start + 32000])[None])
        at = replace(mine.corpus, clip_frame=mine.corpus.clip_frame + start // D)
        with torch.no_grad():
            _, stats = model(x, x, at)
        for name in ("grains1", "grains2"):
            n_sources = 2 if name == "grains1" else 3
            frames = stats[name][0, :, 0] - n_sources * x.shape[2] - (R + 2)  # in the song
            own_moment = start // D + torch.arange(len(frames)) * R
            assert (frames - own_moment).abs().min() >= shift, (start, name)


def test_a_files_corpus_is_described_for_the_estimate_as_the_recording_is_in_memory(tmp_path):
    """With estimate, a target file's corpus holds every frame's mel spectrum at the recording's
    unit RMS, block by block, as Cascade.describe makes it of the recording in memory, and the
    per-key spectra fitted through stage 1's notes of it."""
    torch.manual_seed(0)
    model = Cascade(CascadeConfig(estimate=True)).eval()
    song = (0.3 * data.demo_piece(4, 3.0, 16000)).astype(np.float32)
    files = target_files_of(tmp_path / "song", {"song.wav": (song, 16000)}, model, 16000, 1)
    corpus, first = files.corpus, files.recordings[0].first_frame
    in_memory = model.describe(torch.from_numpy(song)[None])
    n = in_memory.allowed.shape[1]
    torch.testing.assert_close(corpus.mel_level, in_memory.mel_level)
    torch.testing.assert_close(corpus.mel[:, first : first + n], in_memory.mel[:, :n], atol=0.02, rtol=0)  # dB: float32 FFTs of other lengths
    assert corpus.spectra.shape == in_memory.spectra.shape and torch.isfinite(corpus.spectra).all()
    assert (corpus.spectra > 0).any()
