"""
What the lab's experiments take from train.py: the default run's triplets, and whole training
runs, each judged by evaluate.py. train.py and evaluate.py run as processes of their own, as a
user runs them.
"""

import csv
import os
import shutil
import subprocess
import sys
import time

from cascade_rms import checkpointing, hyperparameters, scores
from lab import ROOT

EVALUATED = ("dist_in", "dist_tgt", "chroma_in", "onset_f_in", "mfcc_tgt")  # from evaluate.py: content, timbre


def train_and_judge(name, overrides, epochs, root):
    """Train one variant with train.py into root/name, then judge it with evaluate.py: its last
    epoch's row of metrics.csv with the evaluation's medians, and how many epochs warned."""
    out_dir = os.path.join(root, name)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)  # ours alone: a variant is rerun from scratch
    # the demo music, as the lab log's tables were measured: its evaluation is against input and target
    command = [sys.executable, hyperparameters.TRAIN_SCRIPT, "--dataset=demo", f"--out_dir={out_dir}", f"--epochs={epochs}",
               *overrides]
    t0 = time.time()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "train.log"), "w") as f:
        f.write(result.stdout + result.stderr)
    if result.returncode != 0:
        return None, f"exit {result.returncode}: {(result.stderr.strip().splitlines() or ['?'])[-1]}"
    with open(os.path.join(out_dir, "metrics.csv")) as f:
        epochs_rows = [r for r in csv.DictReader(f) if r["kind"] == "epoch"]
    judged = os.path.join(out_dir, "evaluate.csv")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"), f"--ckpt={checkpointing.files(out_dir)[0]}",
                             f"--csv={judged}"], check=True, capture_output=True, text=True, cwd=ROOT)
    with open(os.path.join(out_dir, "evaluate.txt"), "w") as f:
        f.write(result.stdout)
    with open(judged) as f:
        output = next(csv.DictReader(f))  # the model's row; the references follow
    row = {**epochs_rows[-1], **{k: output[k] for k in EVALUATED}}
    return row, f"{sum(1 for r in epochs_rows if r['warnings'])}/{len(epochs_rows)} epochs warned, {time.time() - t0:.0f} s"


def default_triplets(train_programs=""):
    """The default run's (training, held-out) triplets and its sample rate; train_programs: other
    programs for the training triplets."""
    hp = hyperparameters.defaults()
    hp["train_programs"] = train_programs or hp["train_programs"]
    return (*scores.triplet_sets(hyperparameters.section(scores.ScoresConfig, hp), log=lambda *_: None), hp["sample_rate"])
