"""
What a person hears and sees of an evaluation: spectrograms, and the listening page.

The page (evaluate.py --html DIR) is one static index.html with its audio and images
beside it, as mosaicing and style-transfer papers ship their examples: a row per pair,
a column per clip (input, target, the trained output and each baseline), each an audio
player above its spectrogram, all spectrograms on one log-frequency axis, where notes show, and
one dB scale, and the clip's verdict and metrics below. The columns share the window's width,
so a row fits a 1400-pixel window. It needs no server, no network and no script.

Sizes: audio is 16-bit FLAC, which every browser plays and which is smaller than WAV, and
a spectrogram PNG at most MAX_COLUMNS wide (docs/evaluation.md: how the page grows).
"""

import html
import os
import re

import numpy as np
import soundfile as sf

from . import atomic

WINDOW_SECONDS, HOP_SECONDS = 0.032, 0.008  # the same time and frequency resolution at every rate
DB_RANGE = 80.0  # every image spans the page's loudest bin down to this far below it
PIXELS_PER_SECOND = 1 / HOP_SECONDS  # one column a hop, up to
MAX_COLUMNS = 1000  # beyond 8 s, neighbouring columns are merged (their maximum): a song's image stays small
LOWEST_HZ, IMAGE_ROWS = 40.0, 240  # the images' log-frequency axis: from below the bass's fundamentals, 240 rows
SHOWN_WIDTH = 500  # pixels a long clip's spectrogram is shown at, so a row of songs fits a screen
# metrics under each clip: against input and target, or against a rendered score's ground truth
SHOWN = ("chroma_in", "onset_f_in", "mfcc_tgt", "dist_tgt", "extra_onsets", "lsd", "chroma_truth", "onset_f_truth",
         "mfcc_truth")


def spectrogram_db(audio, rate):
    """Magnitude in dB, 32 ms Hann windows every 8 ms: bins are rate/n_fft ~ 31 Hz apart at any
    rate, so clips at different rates share one frequency scale. # (n_bins, n_frames), bin 0 at 0 Hz"""
    size, hop = int(round(WINDOW_SECONDS * rate)), int(round(HOP_SECONDS * rate))
    audio = np.pad(np.asarray(audio, dtype=np.float64), (0, max(0, size - len(audio))))
    frames = np.lib.stride_tricks.sliding_window_view(audio, size)[::hop] * np.hanning(size)
    return 20 * np.log10(np.abs(np.fft.rfft(frames)).T + 1e-6)


def slug(name):
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def log_frequency(spectrogram, nyquist_bins, top_hz):
    """A linear-frequency spectrogram (bins 0 Hz to top_hz over nyquist_bins rows, as
    spectrogram_db's at the highest rate) resampled onto IMAGE_ROWS log-spaced rows from LOWEST_HZ.
    # (n_bins, T) -> (IMAGE_ROWS, T)"""
    wanted = np.geomspace(LOWEST_HZ, top_hz, IMAGE_ROWS) / top_hz * (nyquist_bins - 1)
    rows = np.arange(len(spectrogram))
    return np.stack([np.interp(wanted, rows, column, right=column.min()) for column in spectrogram.T], axis=1)


def write_images(spectrograms, paths, top_hz):
    """Every spectrogram as a PNG on one scale: frequency on a log axis from LOWEST_HZ up to the
    highest rate's Nyquist, top_hz (bins a lower rate lacks stay at the floor), dB from the
    loudest bin of all down DB_RANGE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = max(s.max() for s in spectrograms)
    height = max(len(s) for s in spectrograms)
    for spectrogram, path in zip(spectrograms, paths):
        merge = -(-spectrogram.shape[1] // MAX_COLUMNS)
        if merge > 1:
            columns = np.pad(spectrogram, ((0, 0), (0, -spectrogram.shape[1] % merge)), constant_values=top - DB_RANGE)
            spectrogram = columns.reshape(len(columns), -1, merge).max(axis=2)
        padded = np.pad(spectrogram, ((0, height - len(spectrogram)), (0, 0)), constant_values=top - DB_RANGE)
        plt.imsave(path, log_frequency(padded, height, top_hz), cmap="magma", vmin=top - DB_RANGE, vmax=top, origin="lower")


def metrics_text(metrics, verdict_name):
    parts = [f"<b>{html.escape(verdict_name)}</b>"] if verdict_name is not None else []
    parts += [f"{k} {metrics[k]:.{0 if abs(metrics[k]) >= 100 else 2}f}" for k in SHOWN if k in metrics]
    return " · ".join(parts)


def write_page(folder, title, rows, tables_text, notes="", figures=None):
    """rows: [(row title, [(clip name, audio (N,) or (N, C), rate, metrics or None, verdict or None)])];
    figures: {row index: (caption, a PNG file in folder)} shown at the end of their rows (the
    score's piano roll and the transcription). Writes folder/index.html, one FLAC and one PNG per
    clip; returns the page's path."""
    os.makedirs(folder, exist_ok=True)
    spectrograms, images, cells, top_hz = [], [], [], 0.0
    for index, (row_title, clips) in enumerate(rows):
        row = []
        for name, audio, rate, metrics, verdict_name in clips:
            stem = f"pair{index}_{slug(name)}"
            peak = max(1.0, float(np.abs(audio).max()) / 0.999)  # never clip; the level as heard is kept otherwise
            sf.write(os.path.join(folder, stem + ".flac"), audio / peak, rate, subtype="PCM_16")
            mono = audio if audio.ndim == 1 else audio.mean(axis=1)
            spectrograms.append(spectrogram_db(mono, rate))
            top_hz = max(top_hz, rate / 2)
            images.append(os.path.join(folder, stem + ".png"))
            below = metrics_text(metrics, verdict_name) if metrics is not None else ""
            row.append(f'<td><div class="name">{html.escape(name)}</div>'
                       f'<audio controls preload="metadata" src="{stem}.flac"></audio>'
                       f'<img src="{stem}.png" alt="spectrogram of {html.escape(name)}" '
                       f'width="{min(round(len(mono) / rate * PIXELS_PER_SECOND), SHOWN_WIDTH)}">'
                       f'<div class="metrics">{below}</div></td>')
        if figures and index in figures:
            caption, image = figures[index]
            row.append(f'<td><div class="name">{html.escape(caption)}</div><img class="figure" src="{html.escape(image)}" '
                       f'alt="{html.escape(caption)}"></td>')
        cells.append(f'<tr><th>{html.escape(row_title)}</th>{"".join(row)}</tr>')
    write_images(spectrograms, images, top_hz)
    page = PAGE.format(title=html.escape(title), notes=notes, tables=html.escape(tables_text), rows="\n".join(cells))
    path = os.path.join(folder, "index.html")
    with atomic.written(path) as partial, open(partial, "w") as f:
        f.write(page)
    return path


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1em; background: #fafafa; color: #222; }}
table.pairs {{ border-collapse: collapse; table-layout: fixed; width: 100%; }}
table.pairs td, table.pairs th {{ border: 1px solid #ddd; padding: 4px; vertical-align: top; background: #fff; }}
table.pairs th {{ writing-mode: vertical-rl; transform: rotate(180deg); font-weight: normal; color: #555; }}
.name {{ font-weight: bold; margin-bottom: 2px; }}
audio {{ width: 100%; display: block; }}
img {{ display: block; height: 128px; max-width: 100%; image-rendering: auto; }}
img.figure {{ height: auto; width: 100%; }}
.metrics {{ font-size: 12px; color: #444; overflow-wrap: anywhere; }}
pre {{ font-size: 12px; background: #fff; border: 1px solid #ddd; padding: 8px; overflow-x: auto; }}
</style></head>
<body>
<h1>{title}</h1>
<p>Each row is one pair: its input and target, then what each system made of them. Every spectrogram
shares one log-frequency scale (40 Hz at the bottom: notes are evenly spaced) and one dB scale (the page's
loudest bin down 80 dB).
Under each clip: its verdict, chroma and onset F against the input (higher: closer), MFCC Fréchet and
average-spectrum distance to the target (lower: closer), extra onsets per second (lower: fewer seams).
{notes}</p>
<table class="pairs">
{rows}
</table>
<h2>The evaluation</h2>
<pre>{tables}</pre>
</body></html>
"""
