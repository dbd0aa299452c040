"""
Runs a script with one fault injected from outside, for the tests of what train.py does
about it; the production code has no hook for tests.

    python tests/faults.py nan_gradient STEP train.py ARGS...   # a NaN in one gradient at STEP
    python tests/faults.py nan_gradient STEP@RANK train.py ...  # the same, on one rank of torchrun's
    python tests/faults.py slow_save SECONDS train.py ARGS...   # every checkpoint save stalls mid-write
"""

import os
import runpy
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cascade_rms import training  # noqa: E402  (after the path: cascade_rms is the project's)

POISONED = "stage2.blocks.0.linear2.weight"  # the parameter whose gradient nan_gradient poisons


def nan_gradient(value):
    """The NaN abort's check runs in training.clip_gradients: poison one gradient just before it."""
    step, _, rank = value.partition("@")
    clip_gradients = training.clip_gradients

    def poisoned(model, max_norm, at_step, *args, **kwargs):
        if at_step == int(step) and os.environ.get("RANK", "0") == (rank or os.environ.get("RANK", "0")):
            model.get_parameter(POISONED).grad[0, 0] = float("nan")
        return clip_gradients(model, max_norm, at_step, *args, **kwargs)

    training.clip_gradients = poisoned


def slow_save(value):
    """A checkpoint's bytes are written, then fsync stalls: the moment a crash is likeliest to hurt."""
    fsync = os.fsync

    def stalled(fd):
        time.sleep(float(value))
        fsync(fd)

    os.fsync = stalled


if __name__ == "__main__":
    fault, value, script, *args = sys.argv[1:]
    {"nan_gradient": nan_gradient, "slow_save": slow_save}[fault](value)
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
