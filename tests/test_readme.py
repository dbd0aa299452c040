"""The README: every command it shows runs on a fresh checkout, in a quick form where the full one
is slow, and its set-up command installs what every command needs."""

import ast
import glob
import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import traceback
import types

import numpy as np
import soundfile as sf

from helpers import (
    README_SCORES,
    README_TORCHRUN,
    README_TRAIN,
    ROOT,
    TINY_RUN,
    as_run_here,
    clone_run,
    in_process,
    readme_commands,
)
from cascade_rms import checkpointing, data

# Commands this test does not run, and why that is safe.
NOT_RUN = {
    "pip install -r requirements.txt": "test_requirements_install_what_every_script_imports checks what it installs",
    "pip install --no-deps -r requirements-synth.txt": "the same test reads it too",
    "python test_model.py": "the suite itself, which CI runs",
    README_TRAIN: "conftest.one_epoch_run runs this very command for every test that needs a run",
    README_TORCHRUN: "test_torchrun.two_rank_epoch runs this very command",
    README_SCORES: "test_scores.test_a_folder_of_midi_and_musicxml_trains_with_a_soundfont_of_choice runs it",
}
# Python scripts run in this process, whose imports are paid once.
IN_PROCESS = ("train.py", "generate.py", "evaluate.py", "plot.py", "lab.bench")  # scripts, and the lab's modules (-m)


def write_song(path, seconds, rate, channels, seed):
    mono = data.demo_piece(seed, seconds, rate)
    sf.write(path, mono if channels == 1 else np.stack([mono, 0.8 * mono], axis=1), rate)


def quick_form(words, places, tmp_path, n):
    """A README command with its file names pointing at this test's files, and the arguments that
    make it quick appended (they win where both set a value: a tiny model, one epoch); None for a
    script this test has no quick form for."""
    words = [places.get(word, word) for word in words]
    words = [f"{w.split('=', 1)[0]}={places.get(w.split('=', 1)[1], w.split('=', 1)[1])}" if w.startswith("--") and "=" in w
             else w for w in words]
    script = words[2] if words[1:2] == ["-m"] else os.path.basename(next((w for w in words if w.endswith((".py", ".sh"))), ""))
    cache = f"--cache_dir={tmp_path / 'cache'}"
    if script in ("run_train_simple.sh", "train.py"):  # train.py: under torchrun
        resumed = "--resume=auto" in words
        out_dir = places["checkpoints/"] if resumed else tmp_path / "runs" / str(n)
        return words + TINY_RUN + [f"--epochs={3 if resumed else 1}", f"--out_dir={out_dir}", cache]
    if script == "lab.bench":
        return words + ["--quick", *TINY_RUN[:5], "--batch_size=2"]
    if script == "generate.py":
        return words + [cache]
    return words if script in ("evaluate.py", "plot.py") else None


def test_every_readme_command_runs(tmp_path, capsys, two_epoch_run, tiny_scores_run):
    """Each command the README shows, with its file names pointing at files made here: tiny runs
    and a checkpoint trained on scores, songs, a folder of songs, scores and a SoundFont. A
    command that exits non-zero fails the test, naming the command; so does a command this test
    has no quick form for."""
    for name, (seconds, rate, channels) in {"song.wav": (0.7, 44100, 2), "other.flac": (1.0, 22050, 1)}.items():
        write_song(tmp_path / name, seconds, rate, channels, seed=len(name))
    (tmp_path / "music").mkdir()
    for i in range(3):
        write_song(tmp_path / "music" / f"song{i}.flac", 1.6, 44100, 2, seed=10 + i)
    places = {"checkpoints/epoch_6_step_1034.pth": checkpointing.files(tiny_scores_run)[0],
              "checkpoints/": str(clone_run(two_epoch_run[0], tmp_path / "run")),
              "~/music": str(tmp_path / "music"), "~/samples": str(tmp_path / "music"),
              **{name: str(tmp_path / name) for name in ("song.wav", "other.flac", "out.wav", "out.flac", "page", "notes.mid")}}
    failures, ran = [], []
    for command in readme_commands():
        if command in NOT_RUN:
            continue
        argv = quick_form(shlex.split(command), places, tmp_path, len(ran))
        if argv is None:
            failures.append(f"{command}: no quick form here; add one to quick_form or a reason to NOT_RUN")
            continue
        if argv[0] == README_TRAIN:  # the wrapper is exec python train.py "$@", run for real by conftest
            argv = ["python", "train.py", *argv[1:]]
        script, args = (argv[2], argv[3:]) if argv[1] == "-m" else (argv[1].removesuffix(".py"), argv[2:])
        if argv[0] == "python" and script in [name.removesuffix(".py") for name in IN_PROCESS]:
            try:
                result = in_process(script, args, capsys)
            except Exception:  # what the shell would show as a traceback and exit 1
                result = types.SimpleNamespace(returncode=1, stderr=traceback.format_exc())
        else:
            result = subprocess.run(as_run_here(argv), cwd=ROOT, capture_output=True, text=True, timeout=300)
        ran.append(command)
        if result.returncode != 0:
            failures.append(f"{command}: exit {result.returncode}: {result.stderr.strip()[-1500:]}")
    assert not failures, "\n\n".join(failures)
    assert len(ran) >= 10, ran  # the README's training, generation, evaluation, plot and bench commands


def test_requirements_install_what_every_script_imports():
    """pip install -r requirements.txt (and requirements-synth.txt) is the README's set-up: every
    package a script, cascade_rms/ or lab/ imports must be in them, pinned (the tests' own selenium is .ci/run's)."""
    pinned = set()
    for name in ("requirements.txt", "requirements-synth.txt"):
        with open(os.path.join(ROOT, name)) as f:
            pinned |= {re.split(r"[=<>~ ]", line, maxsplit=1)[0].lower().replace("_", "-")
                       for line in f if line.strip() and not line.startswith("#")}
    ours = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "*.py"))} | {"cascade_rms", "lab"}
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for path in [p for folder in (".", "cascade_rms", "lab") for p in glob.glob(os.path.join(ROOT, folder, "*.py"))]:
        tree = ast.parse(open(path).read())
        modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
        for module in {m.split(".")[0] for m in modules} - ours - set(sys.stdlib_module_names):
            names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
            if not names & pinned:
                missing.setdefault(module, []).append(os.path.relpath(path, ROOT))
    assert not missing, f"imported but not in requirements.txt: {missing}"
    assert shutil.which("pip") or shutil.which("pip3")


def test_the_readmes_python_is_the_interpreter_running_the_tests():
    """./run_train_simple.sh and the README's python commands run whatever `python` is first on
    PATH: conftest puts this interpreter's folder there, so a venv's python runs the tests
    against that venv, activated or not (before, 27 tests failed on the system's python)."""
    shown = subprocess.run(["python", "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True, cwd=ROOT)
    assert shown.stdout.strip() == sys.prefix


def test_every_file_the_readme_and_docs_link_to_is_in_the_repository():
    """A figure or page linked from README.md or docs/ is committed: an ignored one (docs' figures
    were *.png once) would show on the machine that made it and nowhere else."""
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split())
    linked = []
    for page in ["README.md", *sorted(glob.glob("docs/*.md", root_dir=ROOT))]:
        with open(os.path.join(ROOT, page)) as f:
            for target in re.findall(r"\]\(([^)#\s]+)", f.read()):
                if "://" not in target:
                    linked.append(os.path.normpath(os.path.join(os.path.dirname(page), target)))
    assert len(linked) > 5
    missing = sorted(set(linked) - tracked)
    assert not missing, f"linked but not committed: {missing}"
