"""
What a good blend is, measured on audio: the metrics, the references and the verdict.

Every metric is computed on mono audio at the model's rate. Metrics of texture
(envelope, persistence, motion, fill, flatness) have no absolute scale that holds
for all music, so they are reported against the two sources: 1.0 means "within
the range of the music it was made from".
"""

import numpy as np
import torch
import torch.nn.functional as F

from model import rms

N_FFT, HOP = 512, 256  # 32 ms frames at 16 kHz: resolves notes and drum hits
ENVELOPE_SECONDS = 0.04  # loudness chunks: a 16th note at 375 bpm, finer than any rhythm
MAX_LAG_SECONDS = 0.5  # copies delayed by up to this count as copies
FLOOR_DB = 60.0  # what lies more than this below a clip's loudest frame is silence, for every metric
FILL_DB = 30.0  # a time-frequency cell 'is filled' when within this of its frame's loudest cell
N_BANDS = 40  # log-spaced bands for spectral envelopes: about a third of an octave each at 16 kHz
EPS = 1e-12


def band_of(freqs, sample_rate, n_bands=N_BANDS):
    """Which of n_bands log-spaced bands from 50 Hz to Nyquist each frequency falls in (lower ones: the first)."""
    edges = np.geomspace(50.0, sample_rate / 2, n_bands + 1)
    return np.clip(np.searchsorted(edges, freqs, side="right") - 1, 0, n_bands - 1)


def power_spectrogram(audio):
    """|STFT|^2 with a Hann window. # (N,) -> (frames, N_FFT // 2 + 1)"""
    audio = np.asarray(audio, dtype=np.float64)
    if len(audio) < N_FFT:
        audio = np.pad(audio, (0, N_FFT - len(audio)))
    frames = np.lib.stride_tricks.sliding_window_view(audio, N_FFT)[::HOP]
    return np.abs(np.fft.rfft(frames * np.hanning(N_FFT), axis=1)) ** 2


def loud_frames(power):
    """Frames within FLOOR_DB of the loudest: silence says nothing about texture. # (frames,) bool"""
    energy = power.sum(axis=1)
    return energy > energy.max() * 10 ** (-FLOOR_DB / 10) + EPS


def flatness(power):
    """Mean spectral flatness (geometric / arithmetic mean) of the loud frames: ~0.5 for
    white noise, near 0 for a few clean notes."""
    p = power[loud_frames(power)] + EPS
    return float(np.mean(np.exp(np.log(p).mean(axis=1)) / p.mean(axis=1)))


def fill(power):
    """Share of the time-frequency plane of the loud frames within FILL_DB of each
    frame's loudest cell: how dense the spectrogram is, noise floor included."""
    p = power[loud_frames(power)]
    return float(np.mean(p > p.max(axis=1, keepdims=True) * 10 ** (-FILL_DB / 10)))


def envelope_db(audio, size):
    """Loudness in dB of consecutive chunks of `size` samples. # (N,) -> (chunks,)"""
    size = max(1, min(size, len(audio)))
    chunks = np.asarray(audio, dtype=np.float64)[: len(audio) // size * size].reshape(-1, size)
    return 10 * np.log10((chunks**2).mean(axis=1) + EPS)


def envelope_spread(audio, sample_rate):
    """Standard deviation of the loudness envelope (ENVELOPE_SECONDS chunks) in dB, silence
    floored at FLOOR_DB below the loudest chunk (a fade from silence is not endless variation)."""
    db = envelope_db(audio, int(ENVELOPE_SECONDS * sample_rate))
    return float(np.maximum(db, db.max() - FLOOR_DB).std())


def max_lag_correlation(a, b, sample_rate, max_lag_seconds=MAX_LAG_SECONDS):
    """Largest |sum a[t] b[t+lag]| / (|a| |b|) over lags within +-max_lag_seconds:
    1 for a copy, ~0.88 for a copy delayed by 250 ms in a 2 s clip, ~0.7 for a 50/50 mix."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = len(a) + len(b)
    xc = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    max_lag = int(max_lag_seconds * sample_rate)
    lags = np.concatenate([xc[: max_lag + 1], xc[-max_lag:]])  # lag 0..max, then -max..-1
    return float(np.abs(lags).max() / (np.linalg.norm(a) * np.linalg.norm(b) + EPS))


def persistence(power, gap=N_FFT // HOP, width=9):
    """How long spectral peaks last: the mean correlation between the fine structure
    (log spectrum minus its running median over `width` bins) of each loud frame and
    the next frame that does not overlap it. A note's partials persist (music ~0.5-0.8);
    a noise's peaks are new in every frame (~0)."""
    db = 10 * np.log10(power[loud_frames(power)] + EPS)
    db = np.maximum(db, db.max(axis=1, keepdims=True) - FLOOR_DB)
    padded = np.pad(db, ((0, 0), (width // 2, width // 2)), mode="edge")
    fine = db - np.median(np.lib.stride_tricks.sliding_window_view(padded, width, axis=1), axis=2)
    a, b = fine[:-gap] - fine[:-gap].mean(axis=1, keepdims=True), fine[gap:] - fine[gap:].mean(axis=1, keepdims=True)
    return float(np.mean((a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1) + EPS))) if len(a) else 0.0


def motion(power, sample_rate, n_bands=20, frames=4):
    """How much the spectrum's shape changes over time: the std over time of each band's
    level relative to its frame's mean level, in dB, averaged over bands, on 64 ms
    averages (4 hops). Changing notes move it; a stationary noise or drone, however
    loud its envelope, does not."""
    band = band_of(np.fft.rfftfreq(N_FFT, 1 / sample_rate), sample_rate, n_bands)
    p = power[loud_frames(power)]
    p = p[: max(len(p) // frames, 1) * frames].reshape(-1, min(frames, len(p)), p.shape[1]).mean(axis=1)
    db = 10 * np.log10(np.stack([p[:, band == b].sum(axis=1) for b in range(n_bands)], axis=1) + EPS)
    db = np.maximum(db, db.max(axis=1, keepdims=True) - FLOOR_DB)
    return float((db - db.mean(axis=1, keepdims=True)).std(axis=0).mean())


def mean_spectrum_db(power):
    """Average power spectrum of the loud frames in dB, relative to its own mean (level-free). # (bins,)"""
    db = 10 * np.log10(power[loud_frames(power)].mean(axis=0) + EPS)
    db = np.maximum(db, db.max() - FLOOR_DB)
    return db - db.mean()


def spectral_distance(power_a, power_b):
    """Mean |difference| in dB of two clips' level-free average spectra: timbre and key, not timing."""
    return float(np.abs(mean_spectrum_db(power_a) - mean_spectrum_db(power_b)).mean())


# -----------------------------------------------------------------------------
# the verdict

# Thresholds, read off the references on 200 pairs of demo and 200 of recorded music
# (experiments.py --thresholds; the README has the table):
COPY_CORRELATION = 0.5  # copies, 250 ms delayed copies, the mix: 0.61-1.0 (demo), 0.48-1.0 (recorded); noise <= 0.33
LOOSE_STRUCTURE = 0.8  # max(persistence, motion) of noise: <= 0.55 (demo), <= 0.85 (recorded, 2 in 200 over 0.8)
DENSE_FILL = 2.0  # white noise fills 1.2-16x the plane of the sources; copies and the mix at most 1.5x
FLAT_ENVELOPE = 0.25  # an envelope moving less than this share of the steadier source's is constant output


def range_ratio(value, a, b):
    """1 if value lies between a source's value a and the other's b, else its ratio to the
    nearer end: an output made of its sources' material lands at or near 1."""
    low, high = min(a, b), max(a, b)
    if value < low:
        return value / max(low, EPS)
    return value / max(high, EPS) if value > high else 1.0


def measure(out, x_in, x_tgt, sample_rate):
    """The blend metrics of one output against its two sources (mono numpy audio). The
    texture metrics are range ratios (range_ratio) against the two sources' own values."""
    p_out, p_in, p_tgt, p_mix = (power_spectrogram(a) for a in (out, x_in, x_tgt, x_in + x_tgt))

    def relative(metric, *args):
        return range_ratio(*(metric(p, *args) for p in (p_out, p_in, p_tgt)))

    envelopes = (envelope_spread(a, sample_rate) for a in (out, x_in, x_tgt))
    return {
        "max_corr": max(max_lag_correlation(out, x_in, sample_rate), max_lag_correlation(out, x_tgt, sample_rate)),
        "envelope": range_ratio(*envelopes),
        "persistence": relative(persistence),
        "motion": relative(motion, sample_rate),
        "fill": relative(fill),
        "flatness": relative(flatness),
        "dist_in": spectral_distance(p_out, p_in),
        "dist_tgt": spectral_distance(p_out, p_tgt),
        "dist_mix": spectral_distance(p_out, p_mix),
    }


def verdict(m):
    """copy, hiss or blend, from measure()'s metrics. Noise is less structured than both
    sources on both counts: its peaks do not persist and its spectrum does not move."""
    if m["max_corr"] >= COPY_CORRELATION:
        return "copy"
    if max(m["persistence"], m["motion"]) < LOOSE_STRUCTURE or m["fill"] > DENSE_FILL or m["envelope"] < FLAT_ENVELOPE:
        return "hiss"
    return "blend"


def references(x_in, x_tgt, other, sample_rate, rng):
    """What an output is judged against, all built from the pair itself (plus `other`, a
    segment of another file), all at the pair's combined RMS. # name -> (N,) numpy"""
    level = np.sqrt((np.mean(x_in**2) + np.mean(x_tgt**2)) / 2)
    n = len(x_in)

    def at_level(a):
        return a * level / max(np.sqrt(np.mean(a**2)), EPS)

    white = rng.standard_normal(n)
    # white noise through the target's spectral envelope (its average spectrum in third-octave-like
    # bands): the target's colour, none of its notes or their timing
    band = band_of(np.fft.rfftfreq(n, 1 / sample_rate), sample_rate)
    power = np.abs(np.fft.rfft(x_tgt)) ** 2
    band_power = np.bincount(band, weights=power, minlength=N_BANDS) / np.maximum(np.bincount(band, minlength=N_BANDS), 1)
    shaped = np.fft.irfft(np.fft.rfft(white) * np.sqrt(band_power[band]), n)
    chunk = max(1, int(ENVELOPE_SECONDS * sample_rate))
    envelope = np.sqrt(np.convolve(x_tgt**2, np.ones(chunk) / chunk, mode="same"))
    return {
        "copy of input": at_level(x_in),
        "copy of target": at_level(x_tgt),
        "50/50 mix": at_level(x_in + x_tgt),
        "target delayed 250 ms": at_level(np.roll(x_tgt, int(0.25 * sample_rate))),
        "white noise": at_level(white),
        "noise, target spectrum": at_level(shaped),
        "noise, target spectrum+envelope": at_level(shaped * envelope),
        "another file": at_level(other),
    }


# -----------------------------------------------------------------------------
# the training objective (torch, differentiable)


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


def band_levels(audio, bands):
    """Band levels in dB of every STFT frame, relative to the clip's mean band energy and
    floored FLOOR_DB below it: a level-free picture of what plays when. # (B, N) -> (B, frames, n_bands)"""
    window = torch.hann_window(N_FFT, device=audio.device)
    audio = F.pad(audio.float(), (0, max(N_FFT - audio.shape[1], 0)))
    power = torch.stft(audio, N_FFT, HOP, window=window, center=False, return_complex=True).abs().pow(2)
    energy = power.transpose(1, 2) @ bands.to(audio.device)
    energy = energy / energy.mean(dim=(1, 2), keepdim=True).clamp_min(EPS)
    return 10 * torch.log10(energy.clamp_min(10 ** (-FLOOR_DB / 10)))


def mean_levels(levels):
    """The average spectrum, in dB, of band_levels' frames. # (B, frames, n_bands) -> (B, n_bands)"""
    return 10 * torch.log10((10 ** (levels / 10)).mean(dim=1))


def objective(out, x_in, x_tgt, codec, hp):
    """Total loss and each named term, all on (B, D, T) frames.

    follow   the output's band levels, frame by frame, are the input's: its rhythm,
             dynamics and register (L1, in units of 10 dB)
    sound    the output's average spectrum is the target's: its instruments and key
             (L1 over bands, in units of 10 dB)
    copy     hinge on the largest |waveform correlation| with input or target within
             +-MAX_LAG_SECONDS, above copy_margin: rules out copies, delayed copies and the mix
    novelty  the seed's term: squared Pearson correlation with input and target at lag 0
    recon    the seed's term: relative squared error to the target
    """
    floor = hp["rms_floor"]
    a_out, a_in, a_tgt = codec.decode(out), codec.decode(x_in), codec.decode(x_tgt)
    bands = band_matrix(hp["sample_rate"])
    levels_out = band_levels(a_out, bands)
    max_lag = min(int(MAX_LAG_SECONDS * hp["sample_rate"]), a_out.shape[1] - 1)
    copy = sum((lag_correlation(a_out, a, max_lag, floor) - hp["copy_margin"]).clamp_min(0) for a in (a_in, a_tgt))
    error = (out.float() - x_tgt.float()).pow(2).mean(dim=(1, 2))
    terms = {
        "follow": (levels_out - band_levels(a_in, bands)).abs().mean() / 10,
        "sound": (mean_levels(levels_out) - mean_levels(band_levels(a_tgt, bands))).abs().mean() / 10,
        "copy": copy.mean(),
        "novelty": ((pearson(out, x_in, floor).pow(2) + pearson(out, x_tgt, floor).pow(2)) / 2).mean(),
        "recon": (error / x_tgt.float().pow(2).mean(dim=(1, 2)).clamp_min(floor**2)).mean(),
    }
    total = sum(hp[name + "_weight"] * value for name, value in terms.items())
    return total, {name: value.item() for name, value in terms.items()}


# -----------------------------------------------------------------------------
# the health report

HEALTHY_GRAD_NORM = 100.0
HEALTHY_SCALE = (0.8, 1.2)  # stage scale factors and the output/input RMS ratio
HEALTHY_CORRELATION = 0.3
HEALTHY_BLEND_SHARE = 0.8  # of validation pairs judged blend
ENVELOPE_COLUMNS = 48
ENVELOPE_SHADES = " ░▒▓█"  # blank = silent ... █ = loud, on one absolute dB scale
ENVELOPE_RANGE_DB = (-60.0, 0.0)
WHAT_WENT_WRONG = {
    "copy": f"copy: the output repeats a source within {MAX_LAG_SECONDS:g} s (|correlation| >= {COPY_CORRELATION}); "
            "raise --copy_weight or --min_shift_frames",
    "hiss": "hiss: the output is noise-like (its spectrum holds no notes, or it is flat or dense); the seed's "
            "remedies (--recon_weight, --final_residual, --novelty_weight) do not fix this (README): use "
            "--head=pointer --frame_norm=False with --follow_weight > 0",
}


def envelope_bars(db):
    low, high = ENVELOPE_RANGE_DB
    levels = np.clip((db - low) / (high - low), 0, 1) * (len(ENVELOPE_SHADES) - 1)
    return "".join(ENVELOPE_SHADES[int(round(v))] for v in levels)


def mark(ok):
    return "✅" if ok else "⚠"


def output_health(out, x_in, x_tgt, floor):
    """Per-sample output/input RMS ratio and lag-0 correlations with input and target.
    Frames (B, D, T) and audio (B, 1, N) give the same numbers: the codec is orthonormal. # -> each (B,)"""
    return {"rms_ratio": (rms(out, floor) / rms(x_in, floor)).view(-1),
            "corr_in": pearson(out, x_in, floor), "corr_tgt": pearson(out, x_tgt, floor)}


def judged_health(judged, sample):
    """Health numbers from measure()'s metrics of every validation output, and the loudness
    envelopes of one sample (input, target, output audio) for the bars."""
    verdicts = [verdict(m) for m in judged]
    shares = {f"{v}_share": verdicts.count(v) / len(verdicts) for v in ("blend", "copy", "hiss")}
    columns = max(1, len(sample[0]) // ENVELOPE_COLUMNS)
    bars = {f"envelope_{name}": envelope_db(audio, columns) for name, audio in zip(("input", "target", "output"), sample)}
    return {**shares, "pairs": len(judged), "envelope": float(np.median([m["envelope"] for m in judged])), **bars}


def health_lines(h, grad_norms=None):
    """The health report: one line per indicator, a ✅ or ⚠ each. Returns (lines, warnings)."""
    lines, warnings = [], []

    def check(name, ok, text):
        lines.append(f"  {mark(ok)} {text}")
        if not ok:
            warnings.append(name)

    if grad_norms:
        gmax, gmed = max(grad_norms), float(np.median(grad_norms))
        check("grad_norm", gmax < HEALTHY_GRAD_NORM,
              f"gradient norms   max {gmax:.3g}, median {gmed:.3g} (healthy < {HEALTHY_GRAD_NORM:g}; the default run: 0.6-9.4)")
    low, high = HEALTHY_SCALE
    for key, what in (("scale1", "stage-1 scale factor"), ("scale2", "stage-2 scale factor"), ("rms_ratio", "output/input RMS")):
        check(key, low <= h[key] <= high, f"{what:<16} {h[key]:.3f} (healthy {low}-{high})")
    check("constant_output", h["envelope"] >= FLAT_ENVELOPE,
          f"temporal structure: output envelope {h['envelope']:.2f}x the sources' range (constant output below {FLAT_ENVELOPE})")
    for key in ("input", "target", "output"):
        lines.append(f"      {key:<7}|{envelope_bars(h['envelope_' + key])}|")
    pairs = f"{h['pairs']} validation pairs" if h["pairs"] > 1 else "the output"
    check("not_a_blend", h["blend_share"] >= HEALTHY_BLEND_SHARE,
          f"blend verdict    {h['blend_share']:.0%} of {pairs} blend, {h['copy_share']:.0%} copy, {h['hiss_share']:.0%} hiss "
          f"(healthy >= {HEALTHY_BLEND_SHARE:.0%} blend)")
    for failure in ("copy", "hiss"):
        if h[f"{failure}_share"] > 1 - HEALTHY_BLEND_SHARE:
            lines.append(f"      {WHAT_WENT_WRONG[failure]}")
    for key, what in (("corr_in", "output->input"), ("corr_tgt", "output->target")):
        check(key, abs(h[key]) < HEALTHY_CORRELATION, f"correlation {what:<14} {h[key]:+.3f} (healthy below {HEALTHY_CORRELATION})")
    return lines, warnings
