"""
Is an output a blend, a copy, hiss, or music unrelated to its sources? The texture
metrics and spectral distances of an output against its two sources, and the verdict
read from them.

Every metric is computed on mono audio at the model's rate. Metrics of texture
(envelope, persistence, motion, fill, flatness) have no absolute scale that holds
for all music, so they are reported against the two sources: 1.0 means "within
the range of the music it was made from".
"""

import numpy as np

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
    """Frames within FLOOR_DB of the loudest: silence says nothing about texture. The loudest
    frame is always one, so a digitally silent clip has metrics too. # (frames,) bool"""
    energy = power.sum(axis=1)
    return energy >= energy.max() * 10 ** (-FLOOR_DB / 10)


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
    # any length >= len(a) + len(b) - 1 gives the linear correlation; a power of two keeps the FFT
    # fast at any clip length (a song's own length may be a slow FFT size: docs/generation.md)
    n = 1 << (len(a) + len(b) - 1).bit_length()
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

# Thresholds, read off the references and the untrained mosaics on demo and recorded music
# (python -m lab.thresholds; docs/evaluation.md has the table and the calibration):
COPY_CORRELATION = 0.5  # between noise (below) and copies, delayed copies and the mix (above)
LOOSE_STRUCTURE = 0.8  # max(persistence, motion): noise's lies below, music's at or near 1
FLAT_ENVELOPE = 0.25  # an envelope moving less than this share of the steadier source's is constant output
SPAN_FLOOR_DB = 1.5  # below this distance between a pair's two sources, the span is unstable
UNRELATED_SPAN = 0.85  # between mosaics of the pair (below) and a segment of another file (above)


def range_ratio(value, a, b):
    """1 if value lies between a source's value a and the other's b, else its ratio to the
    nearer end: an output made of its sources' sounds lands at or near 1."""
    low, high = min(a, b), max(a, b)
    if value < low:
        return value / max(low, EPS)
    return value / max(high, EPS) if value > high else 1.0


def blend_metrics(out, x_in, x_tgt, sample_rate):
    """The blend metrics of one output against its two sources (mono numpy audio): the texture
    metrics as range ratios (range_ratio) against the two sources' own values, and the
    spectral distances."""
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
        # relatedness: the spectral distance to the nearer source, as a share of the sources' own distance
        "spectrum_span": min(spectral_distance(p_out, p_in), spectral_distance(p_out, p_tgt))
        / max(spectral_distance(p_in, p_tgt), SPAN_FLOOR_DB),
    }


VERDICTS = ("blend", "copy", "hiss", "unrelated")


def verdict(m):
    """copy, hiss, unrelated or blend, from blend_metrics(). Noise is less structured
    than both sources on both counts: its peaks do not persist and its spectrum does not
    move. Unrelated music is farther from both sources' average spectrum than a blend of
    them: nearly as far as they are from each other, or farther."""
    if m["max_corr"] >= COPY_CORRELATION:
        return "copy"
    # No fill rule: a noise floor loud enough to fill the plane has already broken the
    # structure, and no output judged was hiss by fill alone (docs/evaluation.md)
    if max(m["persistence"], m["motion"]) < LOOSE_STRUCTURE or m["envelope"] < FLAT_ENVELOPE:
        return "hiss"
    if m["spectrum_span"] > UNRELATED_SPAN:
        return "unrelated"
    return "blend"
