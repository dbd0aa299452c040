"""
The lab: the experiments and measurements behind the numbers in docs/, one file each, run from
the repository root as `python -m lab.NAME` (each file's docstring gives its commands). What a
user runs (train, generate, evaluate, plot) stays at the top level; the lab shares the project's
package, cascade_rms, and runs train.py and evaluate.py as processes, as a user does.
"""

import os

from cascade_rms import checkpointing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root, where train.py is


def load_checkpoint(path):
    """checkpointing.load, or SystemExit naming the file and why it is no checkpoint of ours."""
    try:
        return checkpointing.load(path)
    except checkpointing.CheckpointError as e:
        raise SystemExit(str(e)) from None
