"""evaluate.py: an output file against its input and target, and a checkpoint's validation pairs."""

import csv
import importlib.util
import os
import shutil

import numpy as np
import pytest
import torch

from helpers import (
    CHROMIUM,
    generate_command,
    in_process,
    page_problems,
    png_size,
    table_rows,
)
from cascade_rms import data
from model import Cascade, CascadeConfig, MDCTCodec


@pytest.fixture(scope="module")
def generated(tmp_path_factory, tiny_checkpoint):
    """generate.py's output for a 44.1 kHz stereo song against a 22.05 kHz mono target: (folder, the paths)."""
    import soundfile as sf
    tmp_path = tmp_path_factory.mktemp("generated")
    n = int(2.5 * 0.25 * 44100)
    sf.write(tmp_path / "in.wav", np.stack([data.demo_piece(1, n / 44100, 44100)] * 2, axis=1), 44100)
    sf.write(tmp_path / "tgt.flac", data.demo_piece(2, 0.4, 22050), 22050)
    import generate
    generate.main(generate_command(tmp_path, tiny_checkpoint, tmp_path / "in.wav", tmp_path / "tgt.flac",
                                   tmp_path / "out.wav")[2:])
    return tmp_path


def test_evaluate_judges_a_file_against_its_input_and_target_file_or_folder(tmp_path, generated, capsys):
    """The blend evaluation judges generate.py's output file, drawn on a file or a folder."""
    html = ["--html", str(tmp_path / "file_page")]
    files = ["--input", str(generated / "in.wav"), "--output", str(generated / "out.wav"), "--sample_rate=8000"]
    result = in_process("evaluate", [*files, "--target", str(generated / "tgt.flac"), *html], capsys)
    assert result.returncode == 0, result.stderr
    if os.path.exists(CHROMIUM) and importlib.util.find_spec("selenium"):  # generate.py's full-rate output plays
        problems, n_audio, _ = page_problems(tmp_path / "file_page" / "index.html", tmp_path / "file_page.png")
        assert problems == [] and n_audio == 4, problems
    (tmp_path / "corpus").mkdir()
    shutil.copy(generated / "tgt.flac", tmp_path / "corpus" / "tgt.flac")  # generate.py's target may be a folder
    folder = in_process("evaluate", [*files, "--target", str(tmp_path / "corpus")], capsys)
    assert folder.returncode == 0 and table_rows(folder.stdout) == table_rows(result.stdout), folder.stderr
    rows = table_rows(result.stdout)
    assert list(rows) == ["output", "copy of input", "copy of target", "50/50 mix", "target delayed 250 ms", "white noise",
                          "noise, target spectrum", "noise, target spectrum+envelope"], result.stdout
    assert rows["copy of input"][:4] == ["0%", "100%", "0%", "0%"] and rows["white noise"][:4] == ["0%", "0%", "100%", "0%"]


def test_evaluate_judges_a_checkpoints_validation_pairs_and_writes_their_audio(tmp_path, tiny_checkpoint, capsys):
    ckpt = tiny_checkpoint
    result = in_process("evaluate", ["--ckpt", ckpt, "--clips=3", f"--csv={tmp_path / 'eval.csv'}",
                                     f"--audio={tmp_path / 'audio'}", "--audio_clips=0,2"], capsys)
    assert result.returncode == 0 and "3 pairs;" in result.stdout and result.stderr == "", result.stderr
    written = sorted(os.listdir(tmp_path / "audio"))
    assert {f"pair{i}_{name}.wav" for i in (0, 2) for name in ("input", "target", "trained_model", "Let_it_Bee",
                                                                "50_50_mix")} <= set(written)
    assert not any(name.startswith("pair1_") for name in written)
    plotted = in_process("plot", ["--compare", str(tmp_path / "audio")], capsys)
    assert plotted.returncode == 0 and png_size(tmp_path / "audio" / "spectrograms.png")[1] > 0, plotted.stderr
    systems = ["trained model", "untrained model", "random grains", "Let it Bee"]
    assert list(table_rows(result.stdout))[:4] == systems and "another file" in table_rows(result.stdout)
    with open(tmp_path / "eval.paired.csv") as f:
        paired = list(csv.DictReader(f))
    assert {(r["metric"], r["baseline"]) for r in paired} == {(m, b) for m in ("chroma_in", "onset_f_in", "mfcc_tgt",
                                                                             "dist_tgt", "extra_onsets", "grid_onsets")
                                                            for b in ("untrained model", "random grains", "Let it Bee", "50/50 mix")}
    with open(tmp_path / "eval.pairs.csv") as f:
        per_pair = list(csv.DictReader(f))
    assert len(per_pair) == 3 * len(table_rows(result.stdout)) and {r["row"] for r in per_pair} >= set(systems)


def test_evaluate_counts_the_chunks_that_carry_on_the_previous_chunks_grain():
    """The output's temporal structure in grains: most chunks carry on the previous chunk's grain
    where carrying on earns a large bonus, few where it earns nothing (noise has no other reason
    to choose the next grain of the same source)."""
    import evaluate

    class Pairs:
        def __init__(self, n, samples):
            generator = torch.Generator().manual_seed(0)
            self.audio = 0.1 * torch.randn(n, 2, samples, generator=generator)

        def __len__(self):
            return len(self.audio)

        def batch(self, indices):
            return data.Batch(self.audio[list(indices), 0], self.audio[list(indices), 1])

    pairs, shares = Pairs(4, 8000), {}
    for continuity in (0.0, 1000.0):
        config = CascadeConfig(frame_dim=32, sample_rate=8000, pointer_continuity=continuity)
        _, grain_stats = evaluate.outputs(Cascade(config).eval(), MDCTCodec(32), pairs, 2, {})
        shares[continuity] = grain_stats["continued"]
    assert shares[1000.0] > 0.5 > 0.2 > shares[0.0], shares
    line = evaluate.grains_lines({"trained model": grain_stats, "untrained model": None}, sources=False)
    assert line == f"trained model: {shares[1000.0]:.0%} of the final stage's chunks carry on the previous chunk's grain"
