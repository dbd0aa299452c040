"""
What an output is compared against, all built from the same pair and all at the
pair's combined RMS:

    references  copies, the mix, a delayed copy, noises and a segment of another file:
                what the verdict must tell apart from a blend
    systems     mosaics made with no training: random grains with the pointer head's own
                chunking and crossfades, and Let it Bee (Driedger, Pratzlich & Muller,
                "Let it Bee: towards NMF-inspired audio mosaicing", ISMIR 2015)
"""

import librosa
import numpy as np
import scipy.ndimage
import torch

from model import PointerHead, combined_rms, scale_to_rms

from .verdict import ENVELOPE_SECONDS, EPS, N_BANDS, band_of

# Let it Bee at 16 kHz: 64 ms windows and 32 ms hops, near the paper's 2048/1024 at 22.05 kHz.
# The restrictions' sizes are the paper's settings as we read them.
LET_IT_BEE_FFT, LET_IT_BEE_HOP = 1024, 512
LET_IT_BEE_ITERATIONS = 50  # L: enough to rebuild the input from its own frames (tests/test_baselines.py)
LET_IT_BEE_REPETITION = 3  # r: a template may be active once within this many frames
LET_IT_BEE_POLYPHONY = 10  # p: at most this many templates per frame
LET_IT_BEE_CONTINUITY = 3  # c: length of the diagonal filter that favours playing templates on in order


def at_level(audio, x_in, x_tgt):
    """audio scaled to the pair's combined RMS by the model's own fixed RMS scaling: the level
    every stage aims for. # (N,) numpy"""
    def frames(a):  # the whole clip as one (1, 1, N) "frame": its RMS is the clip's
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).view(1, 1, -1)

    scaled, _ = scale_to_rms(frames(audio), combined_rms(frames(x_in), frames(x_tgt), EPS), EPS)
    return scaled.view(-1).numpy()


def references(x_in, x_tgt, other, sample_rate, rng):
    """What an output is judged against, all built from the pair itself (plus `other`, a
    segment of another file). # name -> (N,) numpy"""
    n = len(x_in)
    white = rng.standard_normal(n)
    # white noise through the target's spectral envelope (its average spectrum in third-octave-like
    # bands): the target's colour, none of its notes or their timing
    band = band_of(np.fft.rfftfreq(n, 1 / sample_rate), sample_rate)
    power = np.abs(np.fft.rfft(x_tgt)) ** 2
    band_power = np.bincount(band, weights=power, minlength=N_BANDS) / np.maximum(np.bincount(band, minlength=N_BANDS), 1)
    shaped = np.fft.irfft(np.fft.rfft(white) * np.sqrt(band_power[band]), n)
    chunk = max(1, int(ENVELOPE_SECONDS * sample_rate))
    envelope = np.sqrt(np.convolve(x_tgt**2, np.ones(chunk) / chunk, mode="same"))
    made = {
        "copy of input": x_in,
        "copy of target": x_tgt,
        "50/50 mix": x_in + x_tgt,
        "target delayed 250 ms": np.roll(x_tgt, int(0.25 * sample_rate)),
        "white noise": white,
        "noise, target spectrum": shaped,
        "noise, target spectrum+envelope": shaped * envelope,
        "another file": other,
    }
    return {name: at_level(audio, x_in, x_tgt) for name, audio in made.items()}


def random_grains(x_in, x_tgt, config, rng, material=None, material_length=None):
    """Every chunk a grain drawn at random from those the pointer head may play (of the target,
    or of a material when one is given: cascade_rms/scores.py), joined with its crossfades: the head's
    mechanics with no choice. # (N,)"""
    head = PointerHead(2 * config.frame_dim, 2, config)  # its layers stay unused: only its grain machinery
    sources = [head.codec.encode(torch.from_numpy(np.asarray(a, dtype=np.float32))[None]) for a in (x_in, x_tgt)]
    T = sources[0].shape[2]
    corpus, first = None, 0
    allowed = head.allowed(T, "cpu").numpy()
    if material is not None:
        corpus = head.describe(torch.from_numpy(material)[None], torch.tensor([material_length]))
        corpus, first = corpus.at_unit_level(torch.ones(1), config.chunk_frames), 2 * T  # grains numbered after the clip's
        allowed = corpus.allowed.expand(len(allowed), -1).numpy()
    grains = torch.tensor([first + rng.choice(np.flatnonzero(row)) for row in allowed])[None, :, None]  # (1, n_chunks, 1)
    with torch.no_grad():
        out = head.player(torch.ones(grains.shape), grains, sources, corpus)
    return at_level(head.codec.decode(out, len(x_in))[0].numpy(), x_in, x_tgt)


def diagonal_sum(activations, length):
    """Each activation plus its neighbours along the diagonal (template k+i at frame m+i,
    |i| <= length // 2): Let it Bee's continuity filter. # (K, M) -> (K, M)"""
    half = length // 2
    K, M = activations.shape
    padded = np.pad(activations, half)
    return sum(padded[half + i : half + i + K, half + i : half + i + M] for i in range(-half, half + 1))


def let_it_bee(x_in, x_tgt, seed=0):
    """Let it Bee: the input's magnitude spectrogram rebuilt from the target's frames (mosaic),
    at the pair's level. # (N,)"""
    return at_level(mosaic(stft_magnitudes(x_in), x_tgt, len(x_in), seed), x_in, x_tgt)


def stft_magnitudes(audio):
    """The magnitude spectrogram on Let it Bee's STFT grid. # (N,) -> (LET_IT_BEE_FFT//2 + 1, N // LET_IT_BEE_HOP + 1)"""
    return np.abs(librosa.stft(np.asarray(audio, dtype=np.float32), n_fft=LET_IT_BEE_FFT, hop_length=LET_IT_BEE_HOP))


def mosaic(magnitudes, x_tgt, length, seed=0, iterations=LET_IT_BEE_ITERATIONS, repetition=LET_IT_BEE_REPETITION,
           polyphony=LET_IT_BEE_POLYPHONY, continuity=LET_IT_BEE_CONTINUITY):
    """Let it Bee's mosaic of a magnitude spectrogram V (on its STFT grid): V approximated as W H,
    where W holds the target's STFT frames as fixed templates and only the activations H are
    learned, by KL multiplicative updates. Before each update three restrictions soften what
    breaks them by 1 - (l+1)/L at iteration l (to zero at the last): repetition (H kept only where
    it is the maximum of its row within `repetition` frames), polyphony (the `polyphony` largest
    of each column) and continuity (a diagonal filter). The output is the target's complex frames
    times H, resynthesised by the inverse STFT, `length` samples. # (LET_IT_BEE_FFT//2 + 1, M) -> (length,)"""
    V = np.asarray(magnitudes, dtype=np.float64)  # (F, M)
    templates = librosa.stft(np.asarray(x_tgt, dtype=np.float32), n_fft=LET_IT_BEE_FFT,
                             hop_length=LET_IT_BEE_HOP).astype(np.complex128)  # (F, K)
    templates /= np.abs(templates).sum(axis=0, keepdims=True) + EPS  # unit templates: activations compare as energies
    W = np.abs(templates)
    H = np.random.default_rng(seed).random((W.shape[1], V.shape[1]))  # (K, M)
    column_sums = W.sum(axis=0)[:, None] + EPS
    for iteration in range(iterations):
        shrink = 1 - (iteration + 1) / iterations
        H = np.where(H >= scipy.ndimage.maximum_filter1d(H, size=repetition, axis=1), H, H * shrink)
        if polyphony < H.shape[0]:
            H = np.where(H >= np.partition(H, -polyphony, axis=0)[-polyphony], H, H * shrink)
        H = diagonal_sum(H, continuity)
        H = H * (W.T @ (V / (W @ H + EPS))) / column_sums
    return librosa.istft(templates @ H, length=length, n_fft=LET_IT_BEE_FFT, hop_length=LET_IT_BEE_HOP).astype(np.float32)
