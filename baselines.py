"""
What an output is compared against, all built from the same pair: copies, the mix,
a delayed copy, noises and a segment of another file.
"""

import numpy as np

from verdict import ENVELOPE_SECONDS, EPS, N_BANDS, band_of


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
