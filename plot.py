"""
One picture of a run's health, and spectrograms of what the model makes.

    python plot.py [checkpoints/]
    python plot.py --compare DIR     # what evaluate.py --audio=DIR wrote: every pair's systems side by side

Writes run_health.png (loss terms, pre-clip gradient norm, RMS scale factors,
correlations and the blend verdict's shares, against step, with every warned
epoch and any NaN abort marked) and spectrograms_epoch_N.png (input, target and output of the newest epoch's
samples on one colour scale). Works on a run that is still going. With --compare,
DIR/spectrograms.png: a row per pair, a column per clip (input, target, the trained model and
the model that learns nothing beside it, Let it Bee, random grains; for triplets of rendered
scores: input, ground truth, the trained model, given the true notes, Let it Bee, the oracle),
those written, one colour scale per row.
"""

import csv
import glob
import os
import re
import sys

import matplotlib
import numpy as np
import soundfile as sf

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

from cascade_rms import checkpointing, health_report, listening

FIGURE_INCHES, DPI = (12, 10), 100  # run_health.png is 1200 x 1000 pixels
SPECTROGRAM_INCHES = (15, 4)  # spectrograms_epoch_N.png is 1500 x 400 pixels


def read_metrics(folder):
    path = os.path.join(folder, "metrics.csv")
    if not os.path.exists(path):
        raise SystemExit(f"no metrics file at {path}: point plot.py at a folder train.py has written to")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{path} has no rows yet: wait for the first training step")
    return rows


def column(rows, name):
    return np.array([float(r[name]) if r.get(name) not in ("", None) else np.nan for r in rows])  # none: an older run


def plot_health(rows, grad_clip, path):
    steps = [r for r in rows if r["kind"] == "step"]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    aborts = [r for r in rows if r["kind"] == "nan_abort"]
    fig, axes = plt.subplots(4, 1, figsize=FIGURE_INCHES, dpi=DPI, sharex=True)
    x = column(steps, "step")
    for name in ("loss", "follow", "sound", "copy", "novelty", "recon"):
        if np.isfinite(column(steps, name)).any():  # a term with no weight is not in the loss, nor in metrics.csv
            axes[0].plot(x, column(steps, name), label=name)
    axes[0].plot(column(epochs, "step"), column(epochs, "val_loss"), "o-", label="val loss")
    axes[0].set_yscale("symlog", linthresh=1e-4)
    axes[0].set_ylabel("loss")

    axes[1].semilogy(x, column(steps, "grad_norm"), label="pre-clip grad norm")
    axes[1].axhline(health_report.HEALTHY_GRAD_NORM, color="red", ls="--", label=f"healthy < {health_report.HEALTHY_GRAD_NORM:g}")
    if grad_clip:
        axes[1].axhline(grad_clip, color="gray", ls=":", label=f"clip at {grad_clip:g}")
    axes[1].set_ylabel("gradient norm")

    e = column(epochs, "step")
    for name, label in (("scale1", "stage-1 scale factor"), ("scale2", "stage-2 scale factor"), ("rms_ratio", "output/input RMS")):
        axes[2].plot(e, column(epochs, name), "o-", label=label)
    axes[2].axhspan(*health_report.HEALTHY_SCALE, color="green", alpha=0.15, label="healthy {}-{}".format(*health_report.HEALTHY_SCALE))
    axes[2].set_ylabel("RMS")

    for name, label in (("corr_in", "correlation output->input"), ("corr_tgt", "correlation output->target"),
                        ("blend_share", "share of validation pairs: blend"), ("hiss_share", "... hiss"), ("copy_share", "... copy"),
                        ("unrelated_share", "... unrelated")):
        axes[3].plot(e, column(epochs, name), "o-", label=label)
    for sign in (1, -1):
        axes[3].axhline(sign * health_report.HEALTHY_CORRELATION, color="red", ls="--")
    axes[3].axhline(health_report.HEALTHY_BLEND_SHARE, color="green", ls="--")
    axes[3].set_ylabel("correlation, verdict share")
    axes[3].set_xlabel("step")

    for ax in axes:
        for r in epochs:
            if r["warnings"]:
                ax.axvline(float(r["step"]), color="orange", alpha=0.4)
        for r in aborts:
            ax.axvline(float(r["step"]), color="red", lw=2)
        ax.legend(loc="upper right", fontsize=8)
    warned = sum(1 for r in epochs if r["warnings"])
    title = f"{len(steps)} steps, {len(epochs)} epochs, {warned} with warnings (orange)"
    if aborts:
        title += f", NaN abort at step {aborts[-1]['step']} (red)"
    axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


COMPARED = ("input", "target", "trained_model", "untrained_model", "nearest_neighbour_head", "Let_it_Bee", "random_grains")
# triplets of rendered scores
TRUTH_COMPARED = ("input", "ground_truth", "trained_model", "trained_true_notes", "untrained_model", "Let_it_Bee", "oracle")


def plot_comparison(folder):
    """Every pair's clips that evaluate.py --audio wrote, one row each; returns the written path."""
    pairs = sorted({int(m.group(1)) for p in glob.glob(os.path.join(folder, "pair*_input.wav"))
                    if (m := re.search(r"pair(\d+)_input\.wav$", p))})
    if not pairs:
        raise SystemExit(f"no pair*_input.wav in {folder}: write them with evaluate.py --ckpt ... --audio={folder}")
    compared = TRUTH_COMPARED if os.path.exists(os.path.join(folder, f"pair{pairs[0]}_ground_truth.wav")) else COMPARED
    compared = [name for name in compared if os.path.exists(os.path.join(folder, f"pair{pairs[0]}_{name}.wav"))]
    fig, axes = plt.subplots(len(pairs), len(compared), figsize=(3 * len(compared), 2.6 * len(pairs)), dpi=DPI,
                             sharey=True, squeeze=False)
    for row, pair in zip(axes, pairs):
        clips = [(name, *sf.read(os.path.join(folder, f"pair{pair}_{name}.wav"), dtype="float32")) for name in compared]
        spectrograms = [listening.spectrogram_db(audio, rate) for _, audio, rate in clips]
        top = max(s.max() for s in spectrograms)
        for ax, (name, audio, rate), spectrogram in zip(row, clips, spectrograms):
            ax.imshow(spectrogram, origin="lower", aspect="auto", vmin=top - 80, vmax=top,
                      extent=(0, len(audio) / rate, 0, rate / 2000), cmap="magma")
            ax.set_title(f"pair {pair}: {name.replace('_', ' ')}", fontsize=9)
        row[0].set_ylabel("kHz")
    fig.tight_layout()
    path = os.path.join(folder, "spectrograms.png")
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_spectrograms(folder, path_pattern):
    """The newest epoch's input, target and output; returns the written path or None."""
    outputs = glob.glob(os.path.join(folder, "samples", "epoch_*_output.wav"))
    if not outputs:
        return None
    epoch = max(int(re.search(r"epoch_(\d+)_output", p).group(1)) for p in outputs)
    clips = []
    for name in ("input", "target", "output"):
        audio, rate = sf.read(os.path.join(folder, "samples", f"epoch_{epoch}_{name}.wav"), dtype="float32")
        clips.append((name, listening.spectrogram_db(audio, rate), len(audio) / rate, rate))
    top = max(c[1].max() for c in clips)
    fig, axes = plt.subplots(1, 3, figsize=SPECTROGRAM_INCHES, dpi=DPI, sharey=True)
    for ax, (name, spectrogram, seconds, rate) in zip(axes, clips):
        image = ax.imshow(spectrogram, origin="lower", aspect="auto", vmin=top - 80, vmax=top,
                          extent=(0, seconds, 0, rate / 2000), cmap="magma")
        ax.set_title(f"{name}, epoch {epoch}")
        ax.set_xlabel("seconds")
    axes[0].set_ylabel("kHz")
    fig.colorbar(image, ax=axes, label="dB (one scale for all three)")
    path = path_pattern.format(epoch=epoch)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv):
    if argv[:1] == ["--compare"]:
        if len(argv) != 2:
            raise SystemExit("usage: python plot.py --compare DIR (a folder evaluate.py --audio=DIR wrote)")
        print(f"wrote {plot_comparison(argv[1])}")
        return
    folder = argv[0] if argv else "checkpoints"
    rows = read_metrics(folder)
    _, state = checkpointing.newest_good(folder) if os.path.isdir(folder) else (None, None)
    grad_clip = state["hyperparameters"]["grad_clip"] if state else None
    health = os.path.join(folder, "run_health.png")
    plot_health(rows, grad_clip, health)
    print(f"wrote {health}")
    spectrograms = plot_spectrograms(folder, os.path.join(folder, "spectrograms_epoch_{epoch}.png"))
    print(f"wrote {spectrograms}" if spectrograms else f"no samples in {folder}/samples yet: no spectrograms")


if __name__ == "__main__":
    main(sys.argv[1:])
