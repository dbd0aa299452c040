"""cascade_rms/groundtruth.py and evaluate.py on rendered scores: the metrics against the right answer,
the oracle, and the ground-truth table of a checkpoint's held-out triplets."""

import csv
import importlib.util
import os

import numpy as np
import pytest

from helpers import CHROMIUM, in_process, page_problems
from cascade_rms import checkpointing, groundtruth, quality, scores

RATE = 16000


def test_the_metrics_give_the_known_answers(tmp_path):
    piece = scores.read_pieces(scores.score_files("", 1), 4.0, str(tmp_path))[0][1]
    truth = scores.Renderer(scores.default_soundfont(), [42], {60}, RATE).render(piece, 42)[: 4 * RATE]
    heard = quality.features(truth, RATE)
    same = groundtruth.against_truth(0.1 * truth, truth, heard, RATE, 128)  # level-free: the truth at another level
    assert same["lsd"] == pytest.approx(0.0, abs=1e-3) and same["chroma_truth"] > 0.999
    assert same["onset_f_truth"] == 1.0 and same["mfcc_truth"] < 1e-3
    noise = groundtruth.against_truth(np.random.default_rng(0).standard_normal(len(truth)).astype(np.float32), truth, heard,
                                RATE, 128)
    assert noise["lsd"] > 10 and noise["chroma_truth"] < 0.8 and noise["mfcc_truth"] > 1000


def test_evaluate_prints_the_ground_truth_table_and_the_oracle_is_nearest_the_truth(tmp_path, tiny_scores_run, capsys):
    """Every row of the table, paired intervals, and the oracle best on log-spectral distance:
    it is the choice of grains nearest the truth, so no system made of grains, nor the copies or
    Let it Bee, may come nearer. The listening page shows the ground truth beside the output."""
    ckpt = checkpointing.files(tiny_scores_run)[0]
    result = in_process("evaluate", ["--ckpt", str(ckpt), f"--csv={tmp_path / 'truth.csv'}", "--html", str(tmp_path / "page"),
                                     "--html_clips=2"], capsys)
    assert result.returncode == 0, result.stderr
    assert "held-out triplets" in result.stdout and "no training triplet used these pieces or programs" in result.stdout
    for row in ("program 42 (held out)", "program 73 (held out)", "held-out programs, pooled", "training programs, pooled"):
        assert row in result.stdout  # stage 1's transcription: F1 per held-out program, trained and with the blocks reset
    assert "blocks reset" in result.stdout
    with open(tmp_path / "truth.csv") as f:
        measured = list(csv.DictReader(f))
    rows = {}
    for m in measured:
        rows.setdefault(m["row"], []).append(float(m["lsd"]))
    assert list(rows) == ["trained model", "trained, true notes", "trained, refinement off", "nearest-neighbour head",
                          "oracle", "random grains", "Let it Bee", "copy of input", "copy of target"]
    lsd = {name: np.median(values) for name, values in rows.items()}
    assert all(lsd["oracle"] < value for name, value in lsd.items() if name != "oracle"), lsd
    with open(tmp_path / "truth.paired.csv") as f:
        paired = list(csv.DictReader(f))
    assert {(r["metric"], r["baseline"]) for r in paired} == {(m, b) for m in groundtruth.METRICS for b in rows
                                                            if b != "trained model"}
    assert "gap to the oracle on lsd" in result.stdout
    page = (tmp_path / "page" / "index.html").read_text()
    assert "triplet 0" in page and "pair0_ground_truth.flac" in page and "pair0_oracle.flac" in page
    assert "triplet0_notes.png" in page and (tmp_path / "page" / "triplet1_notes.png").exists()  # score and transcription
    if os.path.exists(CHROMIUM) and importlib.util.find_spec("selenium"):
        problems, n_audio, n_images = page_problems(tmp_path / "page" / "index.html", tmp_path / "page.png")
        assert problems == [] and n_audio == 16 and n_images == 18, problems


GM_BANK = "/usr/share/sounds/sf2/sf_GMbank.sf2"  # Debian's csound-soundfont: .ci/run installs it


@pytest.mark.skipif(not os.path.exists(GM_BANK), reason="apt-get install csound-soundfont for the second SoundFont")
def test_evaluate_renders_the_held_out_triplets_with_another_soundfont(tiny_scores_run, capsys):
    ckpt = checkpointing.files(tiny_scores_run)[0]
    result = in_process("evaluate", ["--ckpt", str(ckpt), f"--soundfont={GM_BANK}", "--clips=2"], capsys)
    assert result.returncode == 0, result.stderr
    assert "held-out pieces with sf_GMbank.sf2" in result.stdout and "of sf_GMbank.sf2; no training triplet" in result.stdout
