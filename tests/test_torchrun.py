"""train.py under torchrun: two gloo ranks on this CPU."""

import os
import shlex
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from helpers import (
    README_TORCHRUN,
    ROOT,
    as_run_here,
    newest,
    readme_commands,
    same_training_state,
    sha1,
    step_rows,
    tiny_train,
    train_here,
    wait_for_line,
    with_fault,
    write_collection,
)
from cascade_rms import checkpointing, training


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(out_dir, *args):
    """The README's torchrun command, two ranks of the tiny run into out_dir."""
    command = as_run_here(shlex.split(README_TORCHRUN))[:-1] + tiny_train(out_dir, *args)
    before = f"{out_dir}.before"
    if os.path.isdir(out_dir):
        shutil.copytree(out_dir, before)
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=ROOT)
    if result.returncode and "SIGABRT" in result.stderr:
        # Once in this project's full-suite runs a gloo rank aborted (SIGABRT); it never reproduced
        # alone or under load. Rerun once from the same folder: a failure of our code fails again.
        print(result.stderr[-3000:], file=sys.stderr)
        shutil.rmtree(out_dir, ignore_errors=True)
        if os.path.isdir(before):
            shutil.copytree(before, out_dir)
        result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=ROOT)
    return result


def start_ranks(out_dir, *args, fault=()):
    """The two processes torchrun would start, started by hand so each one's exit code and output can be checked."""
    common = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen([sys.executable, "-u", *with_fault(fault, tiny_train(out_dir, *args))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             env={**common, "RANK": str(rank), "LOCAL_RANK": str(rank)})
            for rank in range(2)]


@pytest.fixture(scope="module")
def two_rank_epoch(tmp_path_factory):
    """One epoch on two ranks, started by the README's own torchrun command with the tiny run's arguments."""
    folder = tmp_path_factory.mktemp("ddp")
    assert README_TORCHRUN in readme_commands(), f"the README no longer shows {README_TORCHRUN}: tests/test_readme.py runs it"
    result = torchrun(folder, "--epochs=1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "batch 2 x 2 rank(s) = 4 pairs per step" in result.stdout
    assert result.stdout.count("\nstep 1/") == 1, "only rank 0 prints"
    return folder


def test_two_ranks_match_one_process_on_the_same_global_batch(tmp_path, two_rank_epoch, capsys):
    assert [os.path.basename(p) for p in checkpointing.files(two_rank_epoch)] == ["epoch_1_step_5.pth"]
    single = tmp_path / "single"
    assert train_here(single, "--epochs=1", "--batch_size=4", capsys=capsys).returncode == 0
    losses_ddp, losses_single = step_rows(two_rank_epoch), step_rows(single)
    assert sorted(losses_ddp) == sorted(losses_single) == [1, 2, 3, 4, 5]
    for step in losses_single:  # step 1 checks the sharding, the later ones the averaged gradients
        assert losses_ddp[step] == pytest.approx(losses_single[step], rel=1e-4), step
    a, b = checkpointing.load(newest(two_rank_epoch)), checkpointing.load(newest(single))
    for key, value in a["model"].items():
        # atol: Adam moves a weight whose gradient is ~0 (the pointer's seek and prefer where its
        # softmax is saturated) by up to lr = 1e-4 per step in a direction a summation-order
        # difference can flip: 5 steps, up to 1e-3. The losses above, step by step, are the tight check.
        torch.testing.assert_close(value, b["model"][key], rtol=1e-4, atol=1e-3)


def test_two_ranks_resume_on_two_bit_identically_with_their_own_dropout_streams(tmp_path):
    """Two epochs straight, and the same run stopped after its first epoch (its epoch-1
    checkpoint alone) and resumed: the same weights, Adam moments and RNG states, bit for bit."""
    result = torchrun(tmp_path / "straight", "--epochs=2", "--dropout=0.1")  # dropout: each rank's own stream
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-3000:]
    first_epoch = checkpointing.files(tmp_path / "straight")[-1]
    assert os.path.basename(first_epoch) == "epoch_1_step_5.pth"
    (tmp_path / "split").mkdir()
    shutil.copy(first_epoch, tmp_path / "split")
    result = torchrun(tmp_path / "split", "--epochs=2", "--resume=auto", "--dropout=0.1")
    assert result.returncode == 0 and "resumed from" in result.stdout, result.stderr[-3000:]
    assert same_training_state(newest(tmp_path / "straight"), newest(tmp_path / "split"))


def test_a_nan_on_one_rank_stops_both_with_the_abort_code_and_keeps_checkpoints(tmp_path, two_rank_epoch):
    shutil.copytree(two_rank_epoch, tmp_path, dirs_exist_ok=True)
    before = {p: sha1(p) for p in checkpointing.files(tmp_path)}
    ranks = start_ranks(tmp_path, "--epochs=2", "--resume=auto", fault=("nan_gradient", "7@1"))
    outputs = [rank.communicate(timeout=60) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [training.NAN_ABORT_EXIT] * 2, outputs
    for rank, (_, err) in enumerate(outputs):
        assert f"rank {rank} of 2: NaN abort at step 7" in err
    assert "non-finite gradients (1): stage2.blocks.0.linear2.weight" in outputs[1][1]
    assert {p: sha1(p) for p in checkpointing.files(tmp_path)} == before


def test_a_signal_to_one_rank_stops_both_with_a_checkpoint_that_resumes_on_one(tmp_path, capsys):
    ranks = start_ranks(tmp_path, "--epochs=50")
    wait_for_line(ranks[0], "step 8/")  # mid epoch 2
    ranks[1].send_signal(15)
    outputs = [rank.communicate(timeout=60) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [128 + 15] * 2, outputs
    interrupted = newest(tmp_path)
    assert os.path.basename(interrupted).startswith("interrupted_epoch_2_")
    result = train_here(tmp_path, "--epochs=2", "--resume=auto", capsys=capsys)
    assert result.returncode == 0 and f"resumed from {interrupted}" in result.stdout, result.stderr
    assert "comes from 2 rank(s), this run has 1" in result.stdout
    assert os.path.basename(newest(tmp_path)).startswith("epoch_2_")


def test_two_ranks_on_a_folder_warn_once_and_share_one_cache(tmp_path):
    write_collection(tmp_path / "music")
    result = torchrun(tmp_path / "ck", f"--data_dir={tmp_path / 'music'}", f"--cache_dir={tmp_path / 'cache'}", "--epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("warning: skipping") == 3 and "step 1/" in result.stdout
    cached = os.listdir(tmp_path / "cache")  # six good files and the short one, decoded before its length is known
    assert len(cached) == 7 and all(name.endswith(".f32") for name in cached) and checkpointing.files(tmp_path / "ck")
