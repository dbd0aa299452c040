"""
The training objective: differentiable torch terms on the decoded audio of a batch.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model import NoteSpectra, combined_rms, pitch_class_filter

from .verdict import EPS, FLOOR_DB, HOP, MAX_LAG_SECONDS, N_BANDS, N_FFT, band_of

CHROMA_FFT, CHROMA_HOP = 2048, 512  # quality.py's chroma windows (a test checks); importing it would load librosa


def pearson(a, b, floor):
    """Per-sample Pearson correlation over all but the first dim, in float32. # (B, ...) -> (B,)
    The standard deviations are floored, so a silent clip correlates 0 with
    everything, with a finite gradient, instead of poisoning the run with NaN."""
    a = a.float().flatten(1)
    b = b.float().flatten(1)
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    std_a = a.pow(2).mean(dim=1).clamp_min(floor**2).sqrt()
    std_b = b.pow(2).mean(dim=1).clamp_min(floor**2).sqrt()
    return (a * b).mean(dim=1) / (std_a * std_b)


def lag_correlation(a, b, max_lag, floor):
    """max_lag_correlation in torch, per sample: the largest |sum a[t] b[t+lag]| / (|a| |b|)
    over |lag| <= max_lag samples. # (B, N) x 2 -> (B,)"""
    a, b = a.float(), b.float()
    n = a.shape[1] + b.shape[1]
    xc = torch.fft.irfft(torch.fft.rfft(a, n) * torch.fft.rfft(b, n).conj(), n)
    lags = torch.cat([xc[:, : max_lag + 1], xc[:, n - max_lag :]], dim=1)
    norms = (a.pow(2).sum(dim=1) * b.pow(2).sum(dim=1)).clamp_min((floor**2 * a.shape[1]) ** 2).sqrt()
    return lags.abs().amax(dim=1) / norms


def band_matrix(sample_rate, n_bands=N_BANDS):
    """(bins, n_bands) 0/1 matrix summing STFT power into band_of's bands."""
    band = band_of(np.fft.rfftfreq(N_FFT, 1 / sample_rate), sample_rate, n_bands)
    return torch.from_numpy((band[:, None] == np.arange(n_bands)[None, :]).astype(np.float32))


def relative_band_db(audio, bands):
    """Band levels in dB of every STFT frame, relative to the clip's mean band energy and
    floored FLOOR_DB below it: a level-free picture of what plays when. # (B, N) -> (B, frames, n_bands)"""
    window = torch.hann_window(N_FFT, device=audio.device)
    audio = F.pad(audio.float(), (0, max(N_FFT - audio.shape[1], 0)))
    power = torch.stft(audio, N_FFT, HOP, window=window, center=False, return_complex=True).abs().pow(2)
    energy = power.transpose(1, 2) @ bands.to(audio.device)
    energy = energy / energy.mean(dim=(1, 2), keepdim=True).clamp_min(EPS)
    return 10 * torch.log10(energy.clamp_min(10 ** (-FLOOR_DB / 10)))


def mean_levels(levels):
    """The average spectrum, in dB, of relative_band_db' frames. # (B, frames, n_bands) -> (B, n_bands)"""
    return 10 * torch.log10((10 ** (levels / 10)).mean(dim=1))


ONSET_FLOOR = 0.1  # onset strength (10 dB units) a clip without any rise counts as having: silence stays finite and small


def onset_strength(levels):
    """Spectral flux: the rise of every band level from one frame to the next, summed over
    bands, in units of 10 dB: what onset detectors peak-pick. # (B, frames, n_bands) -> (B, max(frames - 1, 1))"""
    rise = levels.diff(dim=1).clamp_min(0).sum(dim=-1) / 10
    return rise if rise.shape[1] else levels.new_zeros(levels.shape[0], 1)  # a single frame rises nowhere


def pitch_classes(audio, sample_rate):
    """The chroma of every frame as a unit vector, with quality.py's windows and librosa's
    filterbank: what the chroma metric reads, in torch. # (B, N) -> (B, frames, 12)"""
    window = torch.hann_window(CHROMA_FFT, device=audio.device)
    audio = F.pad(audio.float(), (0, max(CHROMA_FFT - audio.shape[1], 0)))
    power = torch.stft(audio, CHROMA_FFT, CHROMA_HOP, window=window, center=False, return_complex=True).abs().pow(2)
    bank = pitch_class_filter(sample_rate, CHROMA_FFT).to(audio.device)
    return F.normalize((bank @ power).transpose(1, 2), dim=-1)


@dataclass
class LossWeights:
    """How much each term of objective() counts; train.py's block sets every field (hyperparameters.section)."""
    follow_weight: float
    sound_weight: float
    harmony_weight: float
    onsets_weight: float
    copy_weight: float
    copy_margin: float  # correlation the copy term allows
    novelty_weight: float
    recon_weight: float
    truth_weight: float  # triplets with pointer_fine: the fine levels sought against the ground truth's
    estimate_weight: float  # triplets with estimate: stage 2's estimate against the ground truth's mel spectrum
    notes_weight: float  # triplets: stage 1's notes against the score's


def truth_loss(stats, truth):
    """How far the fine levels both stages seek (stats sought1, sought2) are from the truth's,
    frame by frame: mean squared, in (10 dB)^2. # truth (B, T, fine_bands)"""
    return sum((stats[name] - truth).pow(2).mean() for name in ("sought1", "sought2")) / 2


def estimate_distance(estimate, truth):
    """The log-spectral distance of stage 2's refined estimate of the truth's mel spectrum from the
    truth's, in dB: the RMS over mel bins, mean over frames, both floored DB_BELOW_PEAK below the
    truth's loudest bin as evaluate.py's LSD floors them. # (B, T, N_MELS) x 2 -> (B,)"""
    peak = truth.amax(dim=(1, 2))
    error = NoteSpectra.floored(estimate.float(), peak) - NoteSpectra.floored(truth, peak)
    return (error.pow(2).mean(dim=2) + 1e-6).sqrt().mean(dim=1)  # a finite gradient where a frame is exact


def estimate_loss(estimate, truth):
    """estimate_distance in units of 10 dB, over the batch. A mean square instead let a few frames
    of wrong notes, 30 dB off, steer every step (docs/LOG.md). # (B, T, N_MELS) x 2"""
    return estimate_distance(estimate, truth).mean() / 10


def notes_loss(logits, rolls):
    """Binary cross-entropy of stage 1's note logits against the score's piano roll, every
    (frame, key) cell alike. # (B, T, N_KEYS) x 2"""
    return F.binary_cross_entropy_with_logits(logits.float(), rolls)


def objective(out, x_in, x_tgt, codec, weights, config, stats=None, truth=None, rolls=None):
    """Total loss and the terms it is made of, all on (B, D, T) frames: each term whose weight is
    not 0 and whose inputs exist (truth, estimate and notes need triplets), before its weight.

    follow   the output's band levels, frame by frame, are the input's: its rhythm,
             dynamics and register (L1, in units of 10 dB)
    sound    the output's average spectrum is the target's: its instruments and key
             (L1 over bands, in units of 10 dB)
    harmony  the output's pitch classes are the input's, frame by frame: 1 - chroma cosine
    onsets   the output's notes start where the input's do, and nowhere else: L1 between
             their onset strengths (spectral flux), relative to the input's mean
    copy     hinge on the largest |waveform correlation| with input or target within
             +-MAX_LAG_SECONDS, above copy_margin: rules out copies, delayed copies and the mix
    novelty  the original design's term: squared Pearson correlation with input and target at lag 0
    recon    the original design's term: squared error to the target, relative to the pair's
             combined power, the level the output is scaled to (the original divided by the
             target's own power, which made a near-silent target's term 1e3-1e4)
    truth    triplets with pointer_fine: the fine levels the heads seek against the ground truth's
             (truth_loss; stats from Cascade, truth["fine"] from training.truth_levels)
    estimate triplets with estimate: stage 2's refined estimate against the ground truth's mel
             spectrum, its log-spectral distance (estimate_loss; truth["mel"])
    notes    triplets: stage 1's note logits (stats) against the input's piano roll (notes_loss)

    weights: LossWeights; config: the model's CascadeConfig (its rate and RMS floor).
    """
    floor, rate = config.rms_floor, config.sample_rate
    a_out, a_in, a_tgt = codec.decode(out), codec.decode(x_in), codec.decode(x_tgt)
    bands = band_matrix(rate)
    levels_out, levels_in = relative_band_db(a_out, bands), relative_band_db(a_in, bands)

    def copy():
        max_lag = min(int(MAX_LAG_SECONDS * rate), a_out.shape[1] - 1)
        return sum((lag_correlation(a_out, a, max_lag, floor) - weights.copy_margin).clamp_min(0) for a in (a_in, a_tgt)).mean()

    def onsets():
        flux_in = onset_strength(levels_in)
        return ((onset_strength(levels_out) - flux_in).abs().mean(dim=1) / flux_in.mean(dim=1).clamp_min(ONSET_FLOOR)).mean()

    def recon():
        error = (out.float() - x_tgt.float()).pow(2).mean(dim=(1, 2))
        return (error / combined_rms(x_in, x_tgt, floor).pow(2).view(-1)).mean()

    made = {
        "follow": lambda: (levels_out - levels_in).abs().mean() / 10,
        "sound": lambda: (mean_levels(levels_out) - mean_levels(relative_band_db(a_tgt, bands))).abs().mean() / 10,
        "harmony": lambda: 1 - (pitch_classes(a_out, rate) * pitch_classes(a_in, rate)).sum(dim=-1).mean(),
        "onsets": onsets,
        "copy": copy,
        "novelty": lambda: ((pearson(out, x_in, floor).pow(2) + pearson(out, x_tgt, floor).pow(2)) / 2).mean(),
        "recon": recon,
        "truth": (lambda: truth_loss(stats, truth["fine"])) if truth and "fine" in truth else None,
        "estimate": (lambda: estimate_loss(stats["estimate"], truth["mel"])) if truth and "mel" in truth else None,
        "notes": (lambda: notes_loss(stats["notes"], rolls)) if rolls is not None and "notes" in stats else None,
    }
    terms = {name: term() for name, term in made.items() if term is not None and getattr(weights, name + "_weight")}
    if not terms:
        raise ValueError("every loss term's weight is 0 (or needs a ground truth these clips lack): nothing to train; "
                         "set follow_weight or sound_weight above 0")
    total = sum(getattr(weights, name + "_weight") * value for name, value in terms.items())
    return total, {name: value.item() for name, value in terms.items()}
