"""What the test files share: the repository's paths, train.py's values, tiny configs and runs, and ways to run a script."""

import hashlib
import importlib
import importlib.util
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from cascade_rms import checkpointing, data, hyperparameters, objective, scores
from model import CascadeConfig, rms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULTS = hyperparameters.defaults()  # what a plain run of train.py uses


# float32 and no dropout: the same numbers on every machine, so runs compare exactly (compiled, resumed)
TINY_RUN = ["--frame_dim=16", "--n_layer=1", "--n_head=2", "--sample_rate=8000", "--segment_seconds=0.25",
            "--dataset=demo", "--demo_pieces=4", "--demo_seconds=2.0", "--batch_size=2", "--epochs=2", "--log_interval=2",
            "--dtype=float32", "--dropout=0"]
# after TINY_RUN: five chorales, their first 2 s, 1 s of material (3 training pieces, 2 held out), three
# training programs, and one transcription epoch of two steps before the cascade's, whose stage 2
# plays toward its estimate of the truth
TINY_SCORES = ["--dataset=scores", "--score_pieces=5", "--val_pieces=2", "--score_seconds=2", "--material_seconds=1",
               "--train_programs=0,40,71", "--epoch_triplets=0", "--transcribe_epochs=1", "--transcribe_steps=2",
               "--transcribe_batch=2", "--estimate=True"]


FLOOR = CascadeConfig().rms_floor


def tiny_config(**overrides):
    return CascadeConfig(**{"frame_dim": 16, "n_layer": 1, "n_head": 2, **overrides})


def noise_frames(levels, D=16, T=24, seed=0):
    """One (D, T) clip per level, each with exactly that RMS. # (B, D, T)"""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(levels), D, T, generator=g)
    return x / rms(x, FLOOR) * torch.tensor(levels).view(-1, 1, 1)


def music_like(n_samples, sample_rate=16000, seed=0):
    """Tones plus noise with a decaying envelope, the statistics of real audio. # (2, N)"""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n_samples) / sample_rate
    tones = sum(torch.sin(2 * math.pi * f * t + p) / (i + 1) for i, (f, p) in enumerate([(220, 0.0), (331, 1.0), (1250, 2.0)]))
    envelope = torch.exp(-3 * (t % 0.5))
    return 0.2 * envelope * tones + 0.01 * torch.randn(2, n_samples, generator=g)


def tiny_train(out_dir, *args):
    """train.py's path and arguments for a tiny run into out_dir."""
    return [os.path.join(ROOT, "train.py"), f"--out_dir={out_dir}", *TINY_RUN, *args]


def train_here(out_dir, *args, capsys):
    """run_train's tiny run in this process (in_process), for a run that needs no fault, no signal
    and no process of its own."""
    return in_process("train", tiny_train(out_dir, *args)[1:], capsys)


def run_train(out_dir, *args, fault=(), timeout=120):
    """A tiny run of train.py in a process of its own; with a fault (faults.py's name and value),
    under faults.py, which injects it."""
    return subprocess.run([sys.executable, *with_fault(fault, tiny_train(out_dir, *args))],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def with_fault(fault, command):
    """command (a script and its arguments) run by faults.py with the fault (name, value) injected."""
    return [os.path.join(ROOT, "tests", "faults.py"), *fault, *command] if fault else command


README_TRAIN = "./run_train_simple.sh"  # the README's first command: conftest.one_epoch_run runs it
README_TORCHRUN = "torchrun --standalone --nproc_per_node=2 train.py"  # test_torchrun.two_rank_epoch runs it
README_SCORES = "./run_train_simple.sh --score_dir=~/scores --soundfont=~/soundfonts/mine.sf2"  # test_scores runs it


def readme_commands():
    """Every command of the README's bash blocks, in order, comments removed, && split."""
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = re.findall(r"```bash\n(.*?)```", f.read(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def as_run_here(words):
    """A command's words as this process runs them: python is this interpreter, torchrun its module."""
    launcher = {"python": [sys.executable], "torchrun": [sys.executable, "-m", "torch.distributed.run"]}
    return launcher.get(words[0], words[:1]) + words[1:]


def loss_weights(**overrides):
    """train.py's loss weights, with some changed."""
    return hyperparameters.section(objective.LossWeights, {**DEFAULTS, **overrides})


def sha1(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def clone_run(run, folder):
    shutil.copytree(run, folder, dirs_exist_ok=True)
    return folder


def np_finite(a):
    import numpy as np
    return bool(np.isfinite(a).all())


def demo_validation_pairs(n_pairs):
    """Pairs of the default run's validation pieces, spread over all of them. # [(input, target, other)] numpy"""
    import numpy as np
    hp = DEFAULTS
    tracks = data.run_tracks(hyperparameters.section(data.DataConfig, hp))
    _, val_tracks = data.split_by_file(tracks, hp["val_fraction"], hp["seed"])
    pairs = data.PairDataset(val_tracks, int(hp["segment_seconds"] * hp["sample_rate"]))
    other = [t for t in tracks if t not in val_tracks][0]
    picks = np.linspace(0, len(pairs) - 1, n_pairs).astype(int)
    return [(*(a.numpy() for a in pairs[i]), other.read(32000 * (k + 1), 32000)) for k, i in enumerate(picks)]


def write_collection(folder):
    """Six usable files at three rates, mono and stereo, WAV/FLAC/OGG, and three bad ones."""
    import numpy as np
    import soundfile as sf

    from cascade_rms import data
    folder.mkdir()
    (folder / "sub").mkdir()
    good = [("a.wav", 22050, 1, "WAV"), ("b.flac", 44100, 2, "FLAC"), ("c.ogg", 48000, 2, "OGG"),
            ("sub/d.wav", 48000, 2, "WAV"), ("sub/e.flac", 22050, 1, "FLAC"), ("sub/f.ogg", 44100, 1, "OGG")]
    for i, (name, rate, channels, fmt) in enumerate(good):
        mono = data.demo_piece(100 + i, 1.6, rate)
        audio = mono if channels == 1 else np.stack([mono, 0.5 * mono], axis=1)
        sf.write(folder / name, audio, rate, format=fmt)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage" + bytes(range(256)) * 4)
    (folder / "empty.flac").write_bytes(b"")
    sf.write(folder / "short.wav", data.demo_piece(200, 0.3, 8000), 8000)
    return [str(folder / name) for name, *_ in good], [str(folder / n) for n in ("corrupt.wav", "empty.flac", "short.wav")]


def table_rows(stdout):
    """evaluate.py's first table: {row name: its cells}."""
    lines = stdout.splitlines()
    first = lines.index(next(line for line in lines if line.startswith("---"))) + 1
    body = lines[first:lines.index("", first)]
    return {line[:32].strip(): line[32:].split() for line in body}


def generate_command(tmp_path, ckpt, input_path, target, out):
    return [sys.executable, os.path.join(ROOT, "generate.py"), "--ckpt", str(ckpt), "--input", str(input_path),
            "--target", str(target), "--out", str(out), f"--cache_dir={tmp_path / 'cache'}"]


def in_process(script, argv, capsys):
    """A script's main(argv) run in this process, whose imports are paid once (torch and
    torch._dynamo, which AdamW imports, cost 3.5 s a process): its exit code, stdout and
    stderr, as the shell would see them (a SystemExit message goes to stderr, code 1). The
    SIGINT and SIGTERM handlers train.py installs are put back as they were."""
    import types
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        importlib.import_module(script).main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) or e.code is None else 1
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    captured = capsys.readouterr()
    return types.SimpleNamespace(returncode=code or 0, stdout=captured.out, stderr=captured.err)


def target_files_of(folder, files, model, out_rate, channels, clip=None):
    """target_files.TargetFiles of the given {name: (audio, rate)} files, written under folder."""
    import soundfile as sf

    from cascade_rms import target_files
    folder.mkdir(exist_ok=True)
    for name, (audio, rate) in files.items():
        sf.write(folder / name, audio, rate, subtype="FLOAT" if name.endswith(".wav") else None)
    target = folder / next(iter(files)) if len(files) == 1 else folder
    return target_files.TargetFiles(str(target), model, model.config.sample_rate, out_rate, channels,
                         str(folder.parent / "cache"), clip)


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian's chromium and chromium-driver


def skip_without_a_browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER) and importlib.util.find_spec("selenium")):
        pytest.skip("the listening page is tested in headless Chromium: apt-get install chromium chromium-driver; "
                    "pip install selenium==4.38.0 (.ci/run does)")


def page_problems(page, screenshot):
    """Open the page from disk in headless Chromium and list what is wrong with it: an <audio>
    whose metadata did not load or whose duration is not its file's, an image that did not
    decode, an error on the console. Writes a screenshot either way."""
    import soundfile as sf
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1100"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get("file://" + os.path.abspath(page))
        state = ("return [...document.querySelectorAll('audio')].map(a => "
                 "[a.getAttribute('src'), a.readyState, a.duration, a.error ? a.error.code : 0])")
        deadline = time.time() + 30
        audio = driver.execute_script(state)
        while not all(ready >= 1 or error for _, ready, _, error in audio) and time.time() < deadline:
            time.sleep(0.1)
            audio = driver.execute_script(state)
        images = driver.execute_script("return [...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        console = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        width, window = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    folder, problems = os.path.dirname(page), []
    for src, ready, duration, error in audio:
        path = os.path.join(folder, src)
        expected = sf.info(path).duration if os.path.exists(path) else None
        if ready < 1 or error or expected is None or abs(duration - expected) > 0.01:
            problems.append(f"audio {src}: readyState {ready}, error {error}, duration {duration} (file: {expected})")
    problems += [f"image {src} did not decode" for src, complete, width in images if not (complete and width > 0)]
    if width > window:
        problems.append(f"the page is {width} pixels wide, past the {window}-pixel window's right edge")
    return problems + [f"console: {message}" for message in console], len(audio), len(images)


def same_training_state(path_a, path_b):
    a, b = checkpointing.load(path_a), checkpointing.load(path_b)
    assert a["step"] == b["step"], (a["step"], b["step"])
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for index, moments in a["optimizer"]["state"].items():
        for key, value in moments.items():
            assert torch.equal(value, b["optimizer"]["state"][index][key]), (index, key)
    assert all(torch.equal(x["torch"], y["torch"]) for x, y in zip(a["rng"], b["rng"], strict=True))
    return True


def newest(folder):
    return checkpointing.files(folder)[0]


def start_train(out_dir, *args, fault=()):
    return subprocess.Popen([sys.executable, "-u", *with_fault(fault, tiny_train(out_dir, *args))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def wait_for_line(process, prefix):
    for line in process.stdout:
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting {prefix!r}; stderr: {process.stderr.read()}")


def newest_of(paths):
    return max(paths, key=checkpointing.step_of)


def png_size(path):
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def step_rows(folder):
    rows = [r.split(",") for r in (folder / "metrics.csv").read_text().splitlines()[1:]]
    return {int(r[2]): float(r[3]) for r in rows if r[0] == "step"}


def write_scores(folder, n, start=0):
    """n chorales as files of the user's: the even ones MIDI, the odd ones MusicXML."""
    import music21
    folder.mkdir(exist_ok=True)
    written = []
    for i, path in enumerate(scores.score_files("", start + n)[start:]):
        stream = music21.corpus.parse(path)
        name = folder / (f"piece{i}.mid" if i % 2 == 0 else f"piece{i}.musicxml")
        stream.write("midi" if i % 2 == 0 else "musicxml", fp=str(name))
        written.append(str(name))
    return written
