"""
How good a blend is, measured as the field measures mosaics and style transfer:
content against the input, timbre against the target, and the seams.

    content  frame-wise chroma cosine with the input (the measure behind MusicGen's
             chroma metric) and onset F-measure against the input's onsets (50 ms
             window, the MIREX convention; mir_eval matches them)
    timbre   Frechet distance between Gaussians of MFCC 1-12 of output and target
             (MFCC 0 is loudness); the average-spectrum distance is verdict.py's dist_tgt
    seams    onsets per second beyond the sources' mean (ticks and cut notes at joins),
             and the share of the output's onsets on the pointer's chunk grid

Chroma, MFCC and onsets are librosa's, onset matching is mir_eval's. A source's
features are computed once per pair (features()) and reused for every system judged
against it.
"""

import warnings
from dataclasses import dataclass

import librosa
import mir_eval
import numpy as np
import scipy.linalg

CHROMA_FFT, CHROMA_HOP = 2048, 512  # 128 ms windows at 16 kHz: 7.8 Hz bins, a semitone apart down to ~130 Hz
ONSET_FFT, ONSET_HOP = 1024, 128  # 8 ms steps locate an onset well inside the 50 ms matching window
ONSET_WINDOW = 0.05  # s: an output onset within this of an input onset is a hit
GRID_TOLERANCE = 0.016  # s: an onset this close to a chunk boundary is "on the grid" (one crossfade half-width)
N_MFCC = 13  # MFCC 0-12; 0 is dropped
SILENT_DB = 60.0  # chroma frames this far below the input's loudest carry no pitch: left out
EPS = 1e-12


@dataclass
class Features:
    """What the quality metrics read of one clip."""
    chroma: np.ndarray  # (12, frames), each frame scaled to max 1
    loudness_db: np.ndarray  # (frames,) of the chroma frames
    onsets: np.ndarray  # (n,) seconds
    mfcc_mean: np.ndarray  # (12,)
    mfcc_cov: np.ndarray  # (12, 12)
    seconds: float


def features(audio, sample_rate):
    seconds = len(audio) / sample_rate
    # a clip shorter than one window is read as one zero-padded window (what librosa does, with a warning)
    audio = np.pad(np.asarray(audio, dtype=np.float32), (0, max(0, CHROMA_FFT - len(audio))))
    power = np.abs(librosa.stft(audio, n_fft=CHROMA_FFT, hop_length=CHROMA_HOP)) ** 2
    # tuning=0: estimating the tuning per clip would let two clips of one piece disagree on pitch classes
    chroma = librosa.feature.chroma_stft(S=power, sr=sample_rate, tuning=0.0)
    envelope = librosa.onset.onset_strength(y=audio, sr=sample_rate, n_fft=ONSET_FFT, hop_length=ONSET_HOP)
    onsets = librosa.onset.onset_detect(onset_envelope=envelope, sr=sample_rate, hop_length=ONSET_HOP, units="time")
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=sample_rate)),
                                n_mfcc=N_MFCC)[1:]  # (12, frames)
    return Features(chroma, 10 * np.log10(power.sum(axis=0) + EPS), onsets, mfcc.mean(axis=1), np.cov(mfcc), seconds)


def chroma_similarity(out, reference):
    """Mean cosine of the two chroma vectors of each frame where the reference sounds:
    1 for the same pitch classes in every frame, whatever the instruments; NaN if the
    reference never sounds."""
    n = min(out.chroma.shape[1], reference.chroma.shape[1])
    a, b = out.chroma[:, :n], reference.chroma[:, :n]
    sounding = (reference.loudness_db[:n] > reference.loudness_db.max() - SILENT_DB) & (b.max(axis=0) > 0)
    if not sounding.any():
        return float("nan")  # a digitally silent reference has no pitch to follow
    cosine = (a * b).sum(axis=0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0) + EPS)
    return float(cosine[sounding].mean())


def onset_f_measure(out, reference):
    """F-measure of the output's onsets against the reference's (mir_eval, ONSET_WINDOW);
    NaN where the reference has no onsets, as there is nothing to follow."""
    if len(reference.onsets) == 0:
        return float("nan")
    with warnings.catch_warnings():  # mir_eval warns on an empty estimate; its F of 0 is the answer
        warnings.simplefilter("ignore")
        return float(mir_eval.onset.f_measure(reference.onsets, out.onsets, window=ONSET_WINDOW)[0])


def frechet_distance(a, b):
    """Frechet distance of the Gaussians of two clips' MFCC 1-12: 0 for the same statistics."""
    with warnings.catch_warnings():  # a silent clip's covariance is singular; its root is still the right one
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(a.mfcc_cov @ b.mfcc_cov).real
    return float(((a.mfcc_mean - b.mfcc_mean) ** 2).sum() + np.trace(a.mfcc_cov + b.mfcc_cov - 2 * root))


def grid_share(onsets, grid_seconds):
    """Share of onsets within GRID_TOLERANCE of a multiple of grid_seconds; NaN without onsets.
    By chance: 2 * GRID_TOLERANCE / grid_seconds (25% for the 128 ms grid)."""
    if len(onsets) == 0:
        return float("nan")
    phase = np.mod(onsets, grid_seconds)
    return float(np.mean(np.minimum(phase, grid_seconds - phase) <= GRID_TOLERANCE))


def against_sources(out, source_in, source_tgt, grid_seconds):
    """The quality metrics of one output's Features against its input's and target's."""
    source_rate = (len(source_in.onsets) + len(source_tgt.onsets)) / 2 / source_in.seconds
    return {
        "chroma_in": chroma_similarity(out, source_in),
        "onset_f_in": onset_f_measure(out, source_in),
        "mfcc_tgt": frechet_distance(out, source_tgt),
        "extra_onsets": len(out.onsets) / out.seconds - source_rate,
        "grid_onsets": grid_share(out.onsets, grid_seconds),
    }
