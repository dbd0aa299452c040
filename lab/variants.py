"""
The original design, its three remedies, ours, and ours without each of its choices: each trained
by train.py on the demo music (a process each, into experiments/<name>/) and judged by evaluate.py;
the table shows what a user would see at the end of each run (docs/LOG.md).

    python -m lab.variants                        # every variant (~40 min)
    python -m lab.variants --names=original,ours --epochs=3
"""

import argparse
import sys

from cascade_rms import hyperparameters
from lab import runs

# the original design's network and loss: a linear head after per-frame LayerNorms, dropout 0.1, trained on novelty alone
ORIGINAL = ["--head=linear", "--frame_norm=True", "--dropout=0.1", "--novelty_weight=0.85", "--follow_weight=0",
        "--sound_weight=0", "--copy_weight=0"]

# the two objective terms the levers below were measured with (docs/LOG.md: they went back to 0 after)
HARMONY_ONSETS = ["--harmony_weight=1", "--onsets_weight=1"]

VARIANTS = {
    "original": ORIGINAL,
    "original+A:recon_0.02": ORIGINAL + ["--recon_weight=0.02"],
    "original+B:final_residual_0.3": ORIGINAL + ["--final_residual=0.3"],
    "original+C:novelty_0.5": [a if not a.startswith("--novelty_weight") else "--novelty_weight=0.5" for a in ORIGINAL],
    "ours": [],
    "ours:linear_head": ["--head=linear"],
    "ours:frame_norm": ["--frame_norm=True"],
    "ours:no_sound": ["--sound_weight=0"],
    "ours:no_copy": ["--copy_weight=0"],
    "ours:min_shift_0": ["--min_shift_frames=0"],
    "ours:untrained": ["--lr=1e-12"],  # the pointer's nearest-neighbour prior alone
    "ours:dropout_0.1": ["--dropout=0.1"],
    # the levers of the choice and its training (docs/LOG.md)
    "ours:harmony_onsets": HARMONY_ONSETS,
    "ours:straight_through": HARMONY_ONSETS + ["--pointer_straight_through=True"],
    "ours:seek": HARMONY_ONSETS + ["--pointer_seek=True"],
    "ours:corpus_all": HARMONY_ONSETS + ["--pointer_corpus=all"],
    "ours:no_chroma": HARMONY_ONSETS + ["--pointer_chroma=0"],
    "ours:no_continuity": HARMONY_ONSETS + ["--pointer_continuity=0"],
}

COLUMNS = ("grad_norm_max", "scale1", "scale2", "envelope", "corr_in", "corr_tgt", "blend_share", "copy_share", "hiss_share",
           "unrelated_share", *runs.EVALUATED)


def variants(names, epochs, root):
    header = f"{'variant':<27}" + "".join(f" {c.removesuffix('_share'):>9}" for c in COLUMNS) + "  last epoch's warnings"
    print(header + "\n" + "-" * len(header), flush=True)
    for name in names:
        row, note = runs.train_and_judge(name, VARIANTS[name], epochs, root)
        if row is None:
            print(f"{name:<27} {note}", flush=True)
            continue
        cells = "".join(f" {float(row[c]):>9.3f}" for c in COLUMNS)
        print(f"{name:<27}{cells}  {row['warnings'] or 'none'} ({note})", flush=True)


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m lab.variants", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--names", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--epochs", type=int, default=hyperparameters.defaults()["epochs"],
                        help="epochs of every training run (train.py's default)")
    parser.add_argument("--out_dir", default="experiments", help="where the training runs go")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names.split(",") if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    variants(args.names.split(","), args.epochs, args.out_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
