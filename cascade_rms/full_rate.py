"""
Generation: the model chooses at its own rate, window by window, and what it chose is
played again from the original audio at the input's rate, in every channel.

The pointer head makes every output sample a source sample, weighted by the crossfades, and every other
term of a stage is linear: stage 1 is scale1 * (head_gain1 * grains1 + (input + target) / 2),
stage 2 is scale2 * (head_gain2 * grains2 + final_residual * (input + stage 1 + target) / 3).
So the full-rate output is those same sums of full-rate audio, with the grains, scale
factors and crossfades of the model-rate pass (the crossfades evaluated between the
model's samples). Downmixed and resampled to the model's rate, it matches the model's own
output (tests/test_full_rate.py states by how much).

Windows of about the trained segment length overlap by half; each is heard over its
central half, joined to the next by the grains' own crossfade at a grain boundary (share()).
"""

from dataclasses import replace

import numpy as np
import torch
from tqdm import tqdm

from model import N_KEYS, MDCTCodec, grain_window


def window_size(segment_samples, frame_dim, chunk_frames):
    """The trained segment length, rounded to a whole number of four grains: every window then
    starts on a grain of the ones before it, and its central half is whole grains."""
    quad = 4 * frame_dim * chunk_frames
    return max(quad, int(round(segment_samples / quad)) * quad)


def window_starts(length, size):
    """Starts of windows of `size`, hop size/2, whose central halves cover [0, length); one
    window at 0 for an input no longer than a window."""
    return [0] if length <= size else list(range(-size // 2, length, size // 2))


def share(position, size, single, frame_dim):
    """A window's weight at `position` model samples from its start: 1 over its central
    half and 0 outside, the two joined by the grains' own crossfade at grain boundaries. The
    shares of overlapping windows sum to 1. Blending whole windows by Hann crossfades
    instead mixes two different mosaics everywhere, whose power sums to less than
    either's: the output falls short of the level rule (docs/LOG.md). # like position"""
    if single:
        return np.ones_like(position)
    quarter = size // 4
    return grain_window(torch.from_numpy(position - (quarter - frame_dim)), frame_dim, 2 * quarter // frame_dim).numpy()


def span(audio, begin, n):
    """audio[begin : begin + n], zero outside. # (n, ...)"""
    out = np.zeros((n, *audio.shape[1:]), np.float32)
    lo, hi = max(begin, 0), min(begin + n, len(audio))
    if hi > lo:
        out[lo - begin : hi - begin] = audio[lo:hi]
    return out


def span_at(audio, position, n, margin=256):
    """audio at samples position, position + 1, ... where position may fall between samples:
    band-limited (FFT) interpolation over a margin either side. At 44.1 kHz a grain's place,
    a whole number of model-rate hops, falls between samples: rounding it puts the replay
    far from the model's output (tests/test_full_rate.py states how near it must be). # (n, ...)"""
    whole = int(np.floor(position))
    fraction = position - whole
    if fraction < 1e-9:
        return span(audio, whole, n)
    size = 1 << (n + 2 * margin - 1).bit_length()  # a power of two: FFTs far faster than at the grain's own odd length
    piece = span(audio, whole - margin, size)
    advance = np.exp(2j * np.pi * np.fft.rfftfreq(len(piece)) * fraction).reshape(-1, *[1] * (piece.ndim - 1))
    return np.fft.irfft(np.fft.rfft(piece, axis=0) * advance, len(piece), axis=0)[margin : margin + n].astype(np.float32)


class Generator:
    """Turns an input into a new piece made of a corpus's audio: generate() does the whole
    input, window by window, with a progress bar."""

    def __init__(self, model, target, segment_samples):
        self.model, self.target = model.eval(), target
        config = model.config
        self.D, self.R = config.frame_dim, config.chunk_frames
        self.codec = MDCTCodec(config.frame_dim)
        self.size = window_size(segment_samples, config.frame_dim, config.chunk_frames)
        self.ratio = target.out_rate / config.sample_rate

    @torch.no_grad()
    def generate(self, in_model, in_full, progress=True):
        """in_model: (n,) mono at the model's rate; in_full: (N, channels) at the output's rate.
        -> (output like in_full, the model-rate output (n,), every window's (scale1, scale2) (W, 2),
        and where stage 1 transcribes, the probability of each key sounding in each frame of the
        input, windows crossfaded as the output is (n // D + 1, N_KEYS), else None)"""
        size, ratio = self.size, self.ratio
        starts = window_starts(len(in_model), size)
        tgt_model = self.target.looped(len(in_model))
        tgt_full = self.target.looped(len(in_model), ratio)[: len(in_full)]
        offset = int(np.ceil(ratio * size))  # the first window starts up to half a window before sample 0
        out_model = np.zeros(len(in_model) + 2 * size, np.float32)
        out_full = np.zeros((len(in_full) + 3 * offset, in_full.shape[1]), np.float32)
        single = len(starts) == 1
        model_share = share(np.arange(size, dtype=np.float64), size, single, self.D)
        scales, hop_share = [], model_share[:: self.D]  # each window frame's share: frame t lies at sample t * D
        notes = np.zeros((len(in_model) // self.D + 2 * (size // self.D) + 2, N_KEYS), np.float32)
        for start in tqdm(starts, desc="generating", unit="window", disable=not progress, dynamic_ncols=True):
            x_in = self.codec.encode(torch.from_numpy(span(in_model, start, size))[None])
            x_tgt = self.codec.encode(torch.from_numpy(span(tgt_model, start, size))[None])
            corpus = self.target.corpus
            if corpus.clip_frame is not None:  # where this window lies in the input's own recording
                corpus = replace(corpus, clip_frame=corpus.clip_frame + start // self.D)
            frames, stats = self.model(x_in, x_tgt, corpus)
            out_model[size + start : 2 * size + start] += model_share * self.codec.decode(frames, size)[0].numpy()
            first = int(np.ceil(ratio * start))  # the window's first sample at the output's rate
            n = int(np.ceil(ratio * (start + size))) - first
            at = np.arange(first, first + n) / ratio - start  # (n,) where each output sample lies, in model samples
            replayed = self.replay(stats, span(in_full, first, n), span(tgt_full, first, n), at, x_in.shape[2])
            out_full[offset + first : offset + first + n] += share(at, size, single, self.D)[:, None] * replayed
            scales.append((stats["scale1"].item(), stats["scale2"].item()))
            if "notes" in stats:
                at_frame = (size + start) // self.D
                notes[at_frame : at_frame + len(hop_share)] += hop_share[:, None] * stats["notes"][0, : len(hop_share)].sigmoid().numpy()
        notes = notes[size // self.D : size // self.D + len(in_model) // self.D + 1] if "notes" in stats else None
        return out_full[offset : offset + len(in_full)], out_model[size : size + len(in_model)], np.array(scales), notes

    def replay(self, stats, in_full, tgt_full, at, T):
        """One window's output at the output's rate: the stages' sums (module docstring) of
        full-rate audio, with the model-rate pass's grains and scale factors. # (n, channels)"""
        stage1, stage2 = self.model.stage1, self.model.stage2
        sources = [in_full, tgt_full]
        played = self.grains_at_full_rate(stats["grains1"][0, :, 0].tolist(), sources, at, T)
        out1 = stats["scale1"].item() * (stage1.head_gain * played + stage1.residual_weight * (in_full + tgt_full) / 2)
        sources = [in_full, out1, tgt_full]
        played = self.grains_at_full_rate(stats["grains2"][0, :, 0].tolist(), sources, at, T)
        mean = (in_full + out1 + tgt_full) / 3
        return stats["scale2"].item() * (stage2.head_gain * played + stage2.residual_weight * mean)

    def grains_at_full_rate(self, grains, sources, at, T):
        """The head's chosen grains, each taken from full-rate audio at its place, with the
        head's crossfade (grain_window) between the model's samples. grains: one per chunk,
        numbered as PointerHead.forward numbers them. # (n, channels)"""
        D, R, ratio = self.D, self.R, self.ratio
        n = len(at)
        out = np.zeros((n, sources[0].shape[1]), np.float32)
        for chunk, grain in enumerate(grains):
            begin = chunk * R * D - D  # the chunk's crossfade in begins here, in the window's model samples
            inside = np.flatnonzero((at > begin - 1) & (at < begin + (R + 2) * D))
            if len(inside) == 0:
                continue
            weight = grain_window(torch.from_numpy(at[inside] - begin), D, R).numpy()[:, None]
            source, start = divmod(grain, T)
            if source < len(sources):  # a grain of the window's own sources
                piece = span_at(sources[source], inside[0] + ratio * (start - chunk * R) * D, len(inside))
            else:  # a grain of the corpus: its first sample's place in its recording, at the output's rate
                recording, frame = self.target.locate(grain - len(sources) * T)
                piece = span_at(recording.full_audio, ratio * (at[inside[0]] + (frame - chunk * R) * D), len(inside))
            out[inside] += weight * piece
        return out
