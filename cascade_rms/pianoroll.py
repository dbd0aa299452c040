"""
Pictures of notes: a score's piano roll beside stage 1's transcription of the same audio, as
the epoch's samples (samples/epoch_N_transcription.png), the listening page and the README show them.
"""

import numpy as np

from model import LOWEST_KEY

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def key_name(key):
    """MIDI key -> 'C4'."""
    return f"{NOTE_NAMES[key % 12]}{key // 12 - 1}"


def key_span(*rolls, margin=3):
    """The keys (indices into N_KEYS) from the lowest to the highest sounding in any roll, plus a
    margin: a chorale uses four octaves of the piano's seven. -> slice"""
    sounding = np.flatnonzero(np.any([np.asarray(r).max(axis=0) > 0.5 for r in rolls], axis=0))
    if not len(sounding):
        return slice(0, None)
    return slice(max(sounding[0] - margin, 0), sounding[-1] + margin + 1)


def draw(ax, roll, hop_seconds, keys, title):
    """One roll (T, N_KEYS), 0-1 (a score's) or probabilities (a transcription's), on an axis."""
    shown = np.asarray(roll, dtype=np.float32)[:, keys]
    first = LOWEST_KEY + (keys.start or 0)
    ax.imshow(shown.T, origin="lower", aspect="auto", cmap="Greys", vmin=0.0, vmax=1.0, interpolation="nearest",
              extent=(0.0, len(shown) * hop_seconds, first - 0.5, first + shown.shape[1] - 0.5))
    ticks = [k for k in range(first, first + shown.shape[1]) if k % 12 == 0]
    ax.set_yticks(ticks, [key_name(k) for k in ticks])
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("seconds")


def write_figure(path, roll, probabilities, hop_seconds, title=""):
    """The score's roll and the transcription's probabilities, one above the other, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = key_span(roll, probabilities)
    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True, constrained_layout=True)
    draw(axes[0], roll, hop_seconds, keys, f"the score {title}".strip())
    draw(axes[1], probabilities, hop_seconds, keys, "stage 1's transcription (probability a key sounds)")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
