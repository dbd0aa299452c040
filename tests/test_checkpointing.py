"""cascade_rms/checkpointing.py: old checkpoints rebuild, bad ones are refused, a crash mid-save harms none."""

import os
import time
from dataclasses import asdict

import torch

from helpers import (
    clone_run,
    in_process,
    newest,
    newest_of,
    sha1,
    start_train,
    tiny_config,
    tiny_train,
    train_here,
    wait_for_line,
)
from cascade_rms import atomic, checkpointing
from model import Cascade


def test_a_checkpoint_from_before_the_pointer_head_rebuilds_the_seeds_design():
    model = Cascade(tiny_config(head="linear", frame_norm=True, sample_rate=8000)).eval()
    old_config = {k: v for k, v in asdict(model.config).items() if k not in {*checkpointing.EARLIER_DESIGN, "sample_rate"}}
    old = {"model_config": old_config, "model": model.state_dict(), "hyperparameters": {"sample_rate": 8000}}
    rebuilt = checkpointing.model_from(old).eval()  # the rate was a hyperparameter only
    x, y = torch.randn(2, 16, 30), torch.randn(2, 16, 30)
    assert rebuilt.config.head == "linear" and torch.equal(model(x, y)[0], rebuilt(x, y)[0])
    assert rebuilt.config.sample_rate == 8000


def test_sigkill_during_a_save_leaves_earlier_checkpoints_intact(tmp_path, one_epoch_run, capsys):
    clone_run(one_epoch_run, tmp_path)
    before = {p: sha1(p) for p in checkpointing.files(tmp_path)}
    process = start_train(tmp_path, "--epochs=2", "--resume=auto", fault=("slow_save", "30"))
    wait_for_line(process, "step 20/")  # the epoch-2 save starts right after this step
    deadline = time.time() + 30
    while not any(atomic.PARTIAL in n for n in os.listdir(tmp_path)) and time.time() < deadline:
        time.sleep(0.05)
    assert any(atomic.PARTIAL in n for n in os.listdir(tmp_path)), "the save never started"
    process.kill()
    process.communicate()
    assert {p: sha1(p) for p in checkpointing.files(tmp_path)} == before
    for path in before:
        checkpointing.load(path)
    result = train_here(tmp_path, "--epochs=2", "--resume=auto", capsys=capsys)
    assert result.returncode == 0 and f"resumed from {newest_of(before)}" in result.stdout
    assert not any(atomic.PARTIAL in n for n in os.listdir(tmp_path))


def test_bad_checkpoints_are_skipped_by_auto_and_refused_by_path(tmp_path, capsys, one_epoch_run):
    clone_run(one_epoch_run, tmp_path)
    good = newest(tmp_path)
    truncated, foreign = tmp_path / "epoch_9_step_999.pth", tmp_path / "epoch_8_step_998.pth"
    truncated.write_bytes(open(good, "rb").read()[:3000])
    torch.save({"something": "else"}, foreign)
    result = train_here(tmp_path, "--epochs=2", "--resume=auto", capsys=capsys)
    assert result.returncode == 0, result.stderr
    assert f"warning: skipping {truncated} is not a readable checkpoint" in result.stdout
    assert f"warning: skipping {foreign} is a torch file but not a checkpoint" in result.stdout
    assert f"resumed from {good}" in result.stdout
    assert truncated.exists() and foreign.exists(), "nothing of the user's is deleted"
    for bad in (truncated, foreign):  # refusals, in this process (in_process)
        result = in_process("train", tiny_train(tmp_path, f"--resume={bad}")[1:], capsys)
        assert result.returncode != 0 and f"--resume: {bad}" in result.stderr
    result = in_process("train", tiny_train(tmp_path, "--resume=auto", "--frame_dim=32", "--n_layer=2")[1:], capsys)
    assert result.returncode != 0
    assert "frame_dim (checkpoint 16, requested 32)" in result.stderr and "n_layer (checkpoint 1, requested 2)" in result.stderr
