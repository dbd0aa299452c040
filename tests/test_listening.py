"""cascade_rms/listening.py: the listening page, opened in a real browser."""

import os
import shutil

import numpy as np

from helpers import in_process, page_problems, png_size, skip_without_a_browser
from cascade_rms import data


def test_the_listening_page_plays_and_shows_every_clip_in_a_real_browser(tmp_path, tiny_checkpoint, capsys):
    skip_without_a_browser()
    from cascade_rms import listening
    page = tmp_path / "page"
    result = in_process("evaluate", ["--ckpt", tiny_checkpoint, "--clips=3", f"--html={page}", "--html_clips=2"], capsys)
    assert result.returncode == 0, result.stderr
    problems, n_audio, n_images = page_problems(page / "index.html", tmp_path / "shot.png")
    assert problems == [] and n_audio == n_images == 2 * 7, problems
    assert png_size(tmp_path / "shot.png")[0] > 0
    text = (page / "index.html").read_text()
    assert "http" not in text.replace("http-equiv", "") and "<script" not in text  # nothing from outside, no script
    assert all(name in text for name in ("trained model", "untrained model", "Let it Bee", "random grains", "50/50 mix",
                                         "paired:", "blend"))
    broken = tmp_path / "broken"
    shutil.copytree(page, broken)
    os.remove(broken / "pair1_Let_it_Bee.png")
    os.rename(broken / "pair0_target.flac", broken / "moved.flac")
    problems, _, _ = page_problems(broken / "index.html", tmp_path / "broken.png")
    assert any("pair0_target.flac" in p for p in problems) and any("pair1_Let_it_Bee.png" in p for p in problems), problems

    # 8 pairs of seven 2 s clips at 16 kHz, music-like: the page stays under 20 MB
    rng = np.random.default_rng(0)
    rows = [(f"pair {i}", [(f"clip {j}", data.demo_piece(10 * i + j, 2.0, 16000) + 0.01 * rng.standard_normal(32000),
                            16000, None, None) for j in range(7)]) for i in range(8)]
    listening.write_page(str(tmp_path / "big"), "size", rows, "tables")
    size = sum(os.path.getsize(tmp_path / "big" / name) for name in os.listdir(tmp_path / "big"))
    assert size < 20 * 2**20, size
