"""Fixtures every test file shares: tiny training runs, trained once per session. And the
interpreter: the README's commands call `python` (run_train_simple.sh does), which is this
suite's own interpreter, its folder first on PATH, so `path/to/venv/bin/python test_model.py`
tests that environment without activating it."""

import os
import subprocess
import sys

import pytest

from helpers import (
    README_TRAIN,
    ROOT,
    TINY_SCORES,
    readme_commands,
    run_train,
    tiny_train,
)
from cascade_rms import checkpointing

os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture(scope="session")
def one_epoch_run(tmp_path_factory):
    """A finished one-epoch tiny run, shared: a test that changes a run works on a clone (clone_run).
    It is the README's first command, ./run_train_simple.sh, with the tiny run's arguments."""
    folder = tmp_path_factory.mktemp("one_epoch")
    assert README_TRAIN in readme_commands(), f"the README no longer shows {README_TRAIN}: tests/test_readme.py runs it"
    result = subprocess.run([README_TRAIN, *tiny_train(folder, "--epochs=1")[1:]], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture(scope="session")
def two_epoch_run(tmp_path_factory):
    """The tiny run as run_train makes it (two epochs), and what it printed; shared likewise."""
    folder = tmp_path_factory.mktemp("two_epochs")
    return folder, run_train(folder)


@pytest.fixture(scope="session")
def tiny_checkpoint(one_epoch_run):
    """The one-epoch tiny run's checkpoint (an 8 kHz model), read by the generation tests."""
    return checkpointing.files(one_epoch_run)[0]


@pytest.fixture(scope="session")
def tiny_scores_run(tmp_path_factory):
    """A finished one-epoch tiny run on rendered scores (its renders cached in its own folder)."""
    folder = tmp_path_factory.mktemp("scores_run")
    result = run_train(folder, *TINY_SCORES, "--epochs=1", f"--cache_dir={folder / 'cache'}")
    assert result.returncode == 0, result.stderr
    return folder
