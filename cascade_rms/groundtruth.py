"""
How near an output is to the right answer, where there is one: a rendered score's ground truth,
the input's music played by the target's instrument (cascade_rms/scores.py). The metrics are those of
music style transfer (Cifka et al. 2021): log-spectral distance on a mel spectrogram, and the
content (chroma, onsets) and timbre (MFCC) of quality.py, each against the ground truth instead
of against input or target. Every output is judged at the ground truth's level: fixed RMS
scaling sets a level by rule, not by content.

The oracle is the ceiling of any choice of grains: for every chunk, the grain of the material
whose mel spectrogram is nearest the ground truth's over that chunk, played with the pointer
head's own chunking and crossfades.
"""

import librosa
import numpy as np
import torch
import torch.nn.functional as F

from . import quality

MEL_FFT, N_MELS = 512, 64  # 32 ms windows at 16 kHz, hopped by the codec's frame: the oracle's grid
LSD_FLOOR_DB = 80.0  # mel bins further below the truth's loudest count as this: silence is not a distance
# metric: whether higher is better
METRICS = {"lsd": False, "chroma_truth": True, "onset_f_truth": True, "mfcc_truth": False}
EPS = 1e-12


def at_level_of(audio, truth):
    """audio scaled to the truth's RMS."""
    return audio * np.sqrt(np.mean(truth**2)) / max(float(np.sqrt(np.mean(audio**2))), EPS)


def mel_db(audio, sample_rate, hop):
    """Mel power in dB of frames that start every hop samples (frame f holds [f*hop, f*hop + MEL_FFT)),
    floored at -120 dB. # (N,) -> (frames, N_MELS)"""
    audio = np.pad(np.asarray(audio, dtype=np.float32), (0, MEL_FFT))
    power = np.abs(librosa.stft(audio, n_fft=MEL_FFT, hop_length=hop, center=False)) ** 2
    mel = librosa.feature.melspectrogram(S=power, sr=sample_rate, n_mels=N_MELS)
    return 10 * np.log10(mel.T + 1e-12)


def log_spectral_distance(out, truth, sample_rate, hop):
    """Mean over frames of the RMS difference in dB of the two mel spectra, the output at the
    truth's level, both floored LSD_FLOOR_DB below the truth's loudest bin: 0 for the truth itself."""
    a, b = mel_db(at_level_of(out, truth), sample_rate, hop), mel_db(truth, sample_rate, hop)
    floor = b.max() - LSD_FLOOR_DB
    n = min(len(a), len(b))
    a, b = np.maximum(a[:n], floor), np.maximum(b[:n], floor)
    return float(np.sqrt(((a - b) ** 2).mean(axis=1)).mean())


def against_truth(out, truth, truth_features, sample_rate, hop):
    """Every metric of METRICS for one output against its ground truth."""
    features = quality.features(at_level_of(out, truth), sample_rate)
    return {"lsd": log_spectral_distance(out, truth, sample_rate, hop),
            "chroma_truth": quality.chroma_similarity(features, truth_features),
            "onset_f_truth": quality.onset_f_measure(features, truth_features),
            "mfcc_truth": quality.frechet_distance(features, truth_features)}


@torch.no_grad()
def oracle_distances(head, truth, material, sample_rate):
    """The squared difference in dB of the mel spectra of every chunk of the ground truth and every
    grain of the material, summed over the chunk's frames, with the pointer head's (a PointerHead)
    chunking and grains. # truth (N,), material (M,) -> (n_chunks, P), P grains as head.describe counts them"""
    D, R = head.codec.D, head.chunk_frames
    P = len(material) // D - 1
    truth_frames = torch.from_numpy(mel_db(truth, sample_rate, D)).float()  # (frames, N_MELS)
    material_frames = torch.from_numpy(mel_db(material, sample_rate, D)).float()[: P + R - 1]
    material_frames = F.pad(material_frames, (0, 0, 0, P + R - 1 - len(material_frames)))
    T = -(-len(truth) // D) + 1  # the clip's frames, as MDCTCodec.encode makes them
    n_chunks = -(-T // R)
    chunks = F.pad(truth_frames, (0, 0, 0, n_chunks * R - len(truth_frames)))[: n_chunks * R]
    kernels = chunks.view(n_chunks, R, N_MELS).transpose(1, 2)  # (n_chunks, N_MELS, R)
    cross = F.conv1d(material_frames.T[None], kernels)[0]  # (n_chunks, P)
    squared = F.pad(material_frames.pow(2).sum(dim=1).cumsum(0), (1, 0))
    norms = squared[R:] - squared[:-R]  # (P,): each grain's squared frames
    return norms[None, :P] - 2 * cross[:, :P] + kernels.pow(2).sum(dim=(1, 2))[:, None]


@torch.no_grad()
def oracle(head, truth, material, material_length, sample_rate):
    """The grains of the material nearest the ground truth, chunk by chunk (oracle_distances),
    played by the head (a PointerHead) with its crossfades. The ceiling of any choice of grains.
    # truth (N,) -> (N,)"""
    corpus = head.describe(torch.from_numpy(material)[None], torch.tensor([material_length]))
    distance = oracle_distances(head, truth, material, sample_rate)
    grains = distance.masked_fill(~corpus.allowed[0][None], float("inf")).argmin(dim=1)  # (n_chunks,)
    x = head.codec.encode(torch.from_numpy(truth)[None])  # (1, D, T): the clip's frames, for the chunking
    corpus = corpus.at_unit_level(torch.ones(1), head.chunk_frames)
    S, T, n_chunks = head.n_sources, x.shape[2], len(grains)
    played = head.player(torch.ones(1, n_chunks, 1), (S * T + grains).view(1, n_chunks, 1), [x] * S, corpus)
    return head.codec.decode(played, len(truth))[0].numpy()
