"""train.py: runs, resume, interrupts, the NaN abort and refusals."""

import math
import os

import pytest
import torch

from helpers import (
    clone_run,
    in_process,
    newest,
    np_finite,
    run_train,
    same_training_state,
    sha1,
    start_train,
    step_rows,
    tiny_train,
    train_here,
    wait_for_line,
)
from cascade_rms import checkpointing, training


def test_smoke_run_writes_checkpoint_samples_and_metrics(two_epoch_run):
    tmp_path, result = two_epoch_run
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    step_lines = [line for line in lines if line.startswith("step ")]
    assert step_lines and all(" | epoch " in s and " | grad_norm " in s and " | lr " in s and s.endswith(" ms") for s in step_lines)
    assert any(line.startswith("top grads: ") for line in lines)
    for indicator in ("gradient norms", "stage-1 scale factor", "stage-2 scale factor", "temporal structure", "blend verdict",
                      "correlation output->input"):
        assert indicator in result.stdout
    checkpoints = checkpointing.files(tmp_path)
    assert [os.path.basename(p).split("_step_")[0] for p in checkpoints] == ["epoch_2", "epoch_1"]
    state = checkpointing.load(checkpoints[0])
    model = checkpointing.model_from(state).eval()
    assert state["hyperparameters"]["frame_dim"] == 16 and state["epoch"] == 2 and state["health"]["warnings"] is not None
    x = torch.randn(1, 16, 10)
    assert torch.isfinite(model(x, x)[0]).all()
    import soundfile as sf
    audio, rate = sf.read(tmp_path / "samples" / "epoch_2_output.wav")
    assert rate == 8000 and len(audio) == 2000 and np_finite(audio)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    kinds = [r.split(",")[0] for r in rows[1:]]
    assert kinds.count("epoch") == 2 and kinds.count("step") == state["step"]
    assert all(len(r.split(",")) == len(header) for r in rows[1:])
    epoch_rows = [dict(zip(header, r.split(","))) for r in rows[1:] if r.startswith("epoch,")]
    for row in epoch_rows:
        shares = [float(row[k]) for k in ("blend_share", "copy_share", "hiss_share", "unrelated_share")]
        assert all(0 <= s <= 1 for s in shares) and sum(shares) == pytest.approx(1.0, abs=1e-3)


def test_a_fresh_run_never_overwrites_an_earlier_run(tmp_path, capsys, one_epoch_run):
    clone_run(one_epoch_run, tmp_path)
    before = {p: sha1(p) for p in checkpointing.files(tmp_path)}
    result = in_process("train", tiny_train(tmp_path, "--epochs=1")[1:], capsys)
    assert result.returncode != 0 and "--resume=auto" in result.stderr
    assert {p: sha1(p) for p in checkpointing.files(tmp_path)} == before


def test_nan_abort_names_the_parameter_and_keeps_checkpoints(tmp_path, one_epoch_run):
    clone_run(one_epoch_run, tmp_path)
    before = {p: sha1(p) for p in checkpointing.files(tmp_path)}
    steps = checkpointing.load(checkpointing.files(tmp_path)[0])["step"]
    result = run_train(tmp_path, "--resume=auto", fault=("nan_gradient", str(steps + 2)))
    assert result.returncode == training.NAN_ABORT_EXIT, result.stderr
    assert f"NaN abort at step {steps + 2}" in result.stderr
    assert "non-finite gradients (1): stage2.blocks.0.linear2.weight" in result.stderr
    assert "loss terms: follow" in result.stderr and "first non-finite module output: none" in result.stderr
    assert f"newest good checkpoint: {checkpointing.files(tmp_path)[0]}" in result.stderr
    assert {p: sha1(p) for p in checkpointing.files(tmp_path)} == before
    import csv
    with open(tmp_path / "metrics.csv") as f:
        abort = next(r for r in csv.DictReader(f) if r["kind"] == "nan_abort")
    assert int(abort["step"]) == steps + 2 and math.isfinite(float(abort["loss"])) and abort["grad_norm"] == "nan"


def test_bad_override_exits_non_zero_before_training(tmp_path, capsys):
    result = in_process("train", tiny_train(tmp_path, "--batch_size=0")[1:], capsys)
    assert result.returncode != 0 and "--batch_size=0 must be > 0" in result.stderr
    assert not checkpointing.files(tmp_path)


def test_resume_across_an_epoch_boundary_is_bit_identical(tmp_path, one_epoch_run, two_epoch_run):
    split = clone_run(one_epoch_run, tmp_path / "split")  # epoch 1 of the two-epoch run's exact config
    result = run_train(split, "--epochs=2", "--resume=auto")
    assert result.returncode == 0 and "resumed from" in result.stdout
    assert same_training_state(newest(two_epoch_run[0]), newest(split))


def test_an_interrupt_saves_and_resume_continues_exactly(tmp_path, two_epoch_run):
    """Ctrl-C mid-epoch (SIGTERM takes the same path: tests/test_torchrun.py sends it to one rank);
    resumed, the run ends where a run never interrupted ends."""
    signum = 2
    process = start_train(tmp_path / "run", "--epochs=2")
    wait_for_line(process, "step 13/")  # mid epoch 2
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, err
    interrupted = newest(tmp_path / "run")
    assert os.path.basename(interrupted).startswith("interrupted_") and "continue with --resume=auto" in out
    assert run_train(tmp_path / "run", "--epochs=2", "--resume=auto").returncode == 0
    assert same_training_state(newest(two_epoch_run[0]), newest(tmp_path / "run"))


def test_an_interrupt_after_the_last_step_of_an_epoch_still_ends_that_epoch(tmp_path, one_epoch_run, two_epoch_run):
    clone_run(one_epoch_run, tmp_path)
    epoch_end = newest(tmp_path)
    state = checkpointing.load(epoch_end)
    state.update(epoch=0, epoch_step=state["step"], health=None)  # what a SIGTERM during that step writes
    os.remove(epoch_end)
    checkpointing.save(state, str(tmp_path / f"interrupted_epoch_1_step_{state['step']}.pth"))
    result = run_train(tmp_path, "--epochs=2", "--resume=auto")
    assert result.returncode == 0, result.stderr
    assert "epoch 1/2 | val loss" in result.stdout and f"saved {epoch_end}" in result.stdout
    assert same_training_state(newest(two_epoch_run[0]), newest(tmp_path))


@pytest.mark.parametrize("where", ["file", "unwritable"])
def test_an_unusable_out_dir_fails_before_the_first_step(tmp_path, where, capsys):
    if where == "file":
        out_dir = tmp_path / "checkpoints"
        out_dir.write_text("not a folder")
    else:
        out_dir = "/proc/cascade_checkpoints"  # not writable even for root
    result = in_process("train", tiny_train(out_dir)[1:], capsys)
    assert result.returncode != 0 and str(out_dir) in result.stderr and "--out_dir" in result.stderr
    assert "step 1/" not in result.stdout


def test_a_second_run_on_the_same_folder_refuses_and_a_dead_run_does_not_block(tmp_path, capsys):
    first = start_train(tmp_path, "--epochs=50")
    wait_for_line(first, "step 1/")
    second = in_process("train", tiny_train(tmp_path, "--resume=auto")[1:], capsys)
    assert second.returncode != 0 and f"another run (pid {first.pid}) is training into {tmp_path}" in second.stderr
    first.kill()
    first.communicate()
    assert (tmp_path / ".lock").exists()  # the crashed run's lock file is still there...
    third = train_here(tmp_path, "--resume=auto", "--epochs=1", capsys=capsys)
    assert third.returncode == 0, third.stderr  # ...but the kernel released its lock


def test_compile_trains_the_same_function_and_saves_a_plain_checkpoint(tmp_path, one_epoch_run):
    result = run_train(tmp_path / "compiled", "--epochs=1", "--compile=True", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "compile=True: the first step compiles" in result.stdout
    eager, compiled = step_rows(one_epoch_run), step_rows(tmp_path / "compiled")
    assert sorted(eager) == sorted(compiled) and len(eager) > 1
    for step in eager:
        assert compiled[step] == pytest.approx(eager[step], rel=1e-4), step
    checkpointing.model_from(checkpointing.load(newest(tmp_path / "compiled")))
