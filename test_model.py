"""Tests. `python test_model.py` runs them all and closes with `N passed, N failed`."""

import csv
import hashlib
import importlib.util
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import baselines
import checkpointing
import data
import health_report
import objective
import train
import training
import verdict
from model import Cascade, CascadeConfig, MDCTCodec, PointerHead, combined_rms, rms

HERE = os.path.dirname(os.path.abspath(__file__))
TINY_RUN = ["--frame_dim=16", "--n_layer=1", "--n_head=2", "--sample_rate=8000", "--segment_seconds=0.25",
            "--demo_pieces=4", "--demo_seconds=2.0", "--batch_size=2", "--epochs=2", "--log_interval=2"]

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


# -----------------------------------------------------------------------------
# model


@pytest.mark.parametrize("B,D,T,n_head", [(1, 16, 1, 2), (3, 16, 37, 4), (2, 32, 64, 8), (2, 128, 20, 4)])
def test_output_shapes(B, D, T, n_head):
    model = Cascade(tiny_config(frame_dim=D, n_head=n_head))
    out, stats = model(torch.randn(B, D, T), torch.randn(B, D, T))
    assert out.shape == stats["out1"].shape == (B, D, T)
    assert stats["scale1"].shape == stats["scale2"].shape == (B,)


def test_bad_shapes_and_config_are_value_errors():
    model = Cascade(tiny_config())
    with pytest.raises(ValueError, match="must both be"):
        model(torch.randn(2, 16, 8), torch.randn(2, 16, 9))
    with pytest.raises(ValueError, match="n_head=5"):
        CascadeConfig(n_head=5)


def test_every_stage_output_has_the_combined_rms():
    levels_in = [1e-4, 1e-4, 1.0, 1e2, 3e-2]
    levels_tgt = [1e2, 1e-4, 1e-3, 1e2, 7.0]
    x, y = noise_frames(levels_in, seed=1), noise_frames(levels_tgt, seed=2)
    model = Cascade(tiny_config()).eval()
    out, stats = model(x, y)
    expected = torch.tensor([math.sqrt((a * a + b * b) / 2) for a, b in zip(levels_in, levels_tgt)])
    for stage_out in (stats["out1"], out):
        got = rms(stage_out, 0.0).view(-1).double()
        torch.testing.assert_close(got, expected.double(), rtol=1e-5, atol=0)


def test_no_parameter_is_a_scalar_or_part_of_the_scaling():
    model = Cascade(CascadeConfig())
    owners = {name: type(module) for name, module in model.named_modules()}
    for name, p in model.named_parameters():
        assert p.dim() >= 1 and p.numel() > 1, f"{name} is a scalar"
        owner = owners[name.rsplit(".", 1)[0]]
        assert owner in (nn.Linear, nn.LayerNorm), f"{name} belongs to {owner.__name__}"
        assert not any(word in name for word in ("rms", "scale")), name


@pytest.mark.parametrize("c", [1e-3, 1e3])
def test_level_equivariance(c):
    x, y = noise_frames([0.1, 0.5, 0.02], seed=3), noise_frames([0.3, 0.05, 0.02], seed=4)
    model = Cascade(tiny_config()).eval()
    out, _ = model(x, y)
    scaled, _ = model(c * x, c * y)
    torch.testing.assert_close(scaled, c * out, rtol=1e-5, atol=1e-5 * c * out.abs().max().item())


@pytest.mark.parametrize("level", [1e-4, 1.0, 1e2])
def test_scale_factors_start_near_one_at_any_level(level):
    model = Cascade(CascadeConfig()).eval()
    x, y = noise_frames([level] * 2, D=128, seed=5), noise_frames([level] * 2, D=128, seed=6)
    _, stats = model(x, y)
    for key in ("scale1", "scale2"):
        assert ((stats[key] > 0.5) & (stats[key] < 2.0)).all(), (key, stats[key])


@pytest.mark.parametrize("autocast", [False, True])
def test_forward_and_backward_stay_finite_on_silence_and_extremes(autocast):
    model = Cascade(tiny_config())
    zeros = torch.zeros(16, 24)
    x = noise_frames([1.0, 1e-9, 1e3, 1.0, 1e-12], seed=7)
    y = noise_frames([1.0, 1e-9, 1e-7, 1e3, 1.0], seed=8)
    x[0], y[0], x[3] = zeros, zeros, zeros  # a silent pair, and a silent input beside a loud target
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out, stats = model(x, y)
    loss = out.pow(2).mean() + stats["out1"].sum() + stats["scale1"].sum() + stats["scale2"].sum()
    loss.backward()
    assert out.dtype == torch.float32 and torch.isfinite(out).all() and torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    assert out[0].abs().max() < 1e-9, "a silent pair must give silence"


def test_a_checkpoint_from_before_the_pointer_head_rebuilds_the_seeds_design():
    model = Cascade(tiny_config(head="linear", frame_norm=True, sample_rate=8000)).eval()
    old_config = {k: v for k, v in asdict(model.config).items() if k not in {*checkpointing.EARLIER_DESIGN, "sample_rate"}}
    old = {"model_config": old_config, "model": model.state_dict(), "hyperparameters": {"sample_rate": 8000}}
    rebuilt = checkpointing.model_from(old).eval()  # the rate was a hyperparameter only
    x, y = torch.randn(2, 16, 30), torch.randn(2, 16, 30)
    assert rebuilt.config.head == "linear" and torch.equal(model(x, y)[0], rebuilt(x, y)[0])
    assert rebuilt.config.sample_rate == 8000


def test_checkpoint_dict_round_trip_gives_identical_outputs():
    model = Cascade(tiny_config(n_layer=2)).eval()
    checkpoint = {"model_config": asdict(model.config), "model": model.state_dict()}
    rebuilt = Cascade(CascadeConfig(**checkpoint["model_config"])).eval()
    rebuilt.load_state_dict(checkpoint["model"])
    x, y = torch.randn(2, 16, 30), torch.randn(2, 16, 30)
    assert torch.equal(model(x, y)[0], rebuilt(x, y)[0])


def test_the_linear_head_can_learn_any_goal():
    torch.manual_seed(0)
    model = Cascade(tiny_config(dropout=0.0, head="linear", frame_norm=True))
    x, y = noise_frames([0.3, 0.1], seed=9), noise_frames([0.2, 0.4], seed=10)
    goal = noise_frames([0.25, 0.3], seed=11)  # same RMS as the output, so reachable
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(50):
        loss = ((model(x, y)[0] - goal).pow(2).mean(dim=(1, 2)) / goal.pow(2).mean(dim=(1, 2))).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def pointer_config(**overrides):
    return tiny_config(**{"dropout": 0.0, "chunk_frames": 4, "min_shift_frames": 8, **overrides})


def test_training_on_the_blend_objective_improves_what_the_eval_pointer_makes():
    """Training sees soft choices, eval copies one run per chunk: the gradient through the
    soft choice must still improve the hard output's objective on the batch it trains on.
    Were the choice cut off from the gradient, nothing would train."""
    hp = {**train.HYPERPARAMETERS, "sample_rate": 8000, "frame_dim": 16}
    codec = MDCTCodec(16)
    x, y = (codec.encode(a) for a in data.PairDataset(data.demo_tracks(2, 3.0, 8000, 0), 4000).batch([0, 3]))

    def eval_loss(model):
        model.eval()
        with torch.no_grad():
            loss = objective.objective(model(x, y)[0], x, y, codec, hp)[0].item()
        model.train()
        return loss

    ratios = []
    for seed in range(3):  # one seed's 60 steps improve it by 4-12%
        torch.manual_seed(seed)
        model = Cascade(pointer_config(chunk_frames=8, min_shift_frames=32))
        before = eval_loss(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(60):
            loss, _ = objective.objective(model(x, y)[0], x, y, codec, hp)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        ratios.append(eval_loss(model) / before)
    assert sum(ratios) / len(ratios) < 0.97, ratios


def test_the_pointer_copies_whole_runs_from_at_least_min_shift_away():
    """In eval mode every chunk of the head's output is one source's audio, moved by whole
    frames of at least min_shift_frames: correlation 1 with that source at that lag."""
    torch.manual_seed(0)
    config = pointer_config()
    model = Cascade(config).eval()
    x, y = noise_frames([1.0], T=48, seed=3), noise_frames([1.0], T=48, seed=4)
    head, D, R = model.stage1.pointer, config.frame_dim, config.chunk_frames
    with torch.no_grad():
        weights, runs = head.choose(torch.randn(1, 48, 2 * D), [x, y])
        out = head.copy_runs(weights, runs, [x, y])
    assert runs.shape == weights.shape == (1, 12, 1) and torch.equal(weights, torch.ones(1, 12, 1))
    audio = [head.codec.decode(s)[0] for s in (x, y)]
    out_audio = head.codec.decode(out)[0]
    for chunk, index in enumerate(runs[0, :, 0].tolist()):
        source, start = divmod(index, 48)
        assert abs(start - chunk * R) >= config.min_shift_frames
        # inside the chunk, away from the crossfades, the output is the source's audio moved by whole frames
        n0, n1 = chunk * R * D + D, min((chunk + 1) * R * D - D, len(out_audio))
        if n1 > n0:
            shift = (chunk * R - start) * D
            torch.testing.assert_close(out_audio[n0:n1], audio[source][n0 - shift:n1 - shift], rtol=0, atol=1e-5)


def test_training_mixes_the_best_candidates_by_their_softmax_weight():
    """In training each chunk mixes pointer_candidates runs, the best first, weighted by a softmax
    over all runs: their weights sum to at most 1 and decrease."""
    model = Cascade(pointer_config(pointer_candidates=5)).train()
    x, y = noise_frames([1.0], T=48, seed=3), noise_frames([1.0], T=48, seed=4)
    weights, runs = model.stage1.pointer.choose(torch.randn(1, 48, 32), [x, y])
    assert runs.shape == (1, 12, 5) and (weights.sum(dim=-1) <= 1 + 1e-6).all() and (weights.diff(dim=-1) <= 0).all()
    assert (weights[..., 1:] > 0).any()  # a mix, not the best run alone


def test_straight_through_plays_what_eval_plays_and_its_gradient_reaches_every_choice_layer():
    """Straight through, the forward pass in training copies the best run, exactly what eval
    copies, while the softmax over the candidates carries the gradient to seek, prefer and carry."""
    torch.manual_seed(0)
    model = Cascade(pointer_config(pointer_candidates=5, pointer_straight_through=True, pointer_seek=True))
    x, y = noise_frames([1.0], T=48, seed=3), noise_frames([1.0], T=48, seed=4)
    for p in model.parameters():  # away from the zero init, so every layer moves the choice
        torch.nn.init.normal_(p, std=0.05)
    weights, runs = model.stage1.pointer.train().choose(torch.randn(1, 48, 32), [x, y])
    assert runs.shape == (1, 12, 5)
    torch.testing.assert_close(weights.detach(), F.one_hot(torch.zeros(1, 12).long(), 5).float(), rtol=0, atol=1e-6)
    out, _ = model.train()(x, y)
    out.pow(3).sum().backward()
    with torch.no_grad():
        torch.testing.assert_close(out, model.eval()(x, y)[0], rtol=0, atol=1e-6)
    for name in ("seek", "prefer", "carry"):
        for stage in (model.stage1, model.stage2):
            assert getattr(stage.pointer, name).weight.grad.abs().sum() > 0, name


def steady_tone(seconds=1.0, hz=250.0, sample_rate=16000):
    """A sine whose period divides the 128-sample hop: every run of it starts in phase, so
    any choice of runs rebuilds it exactly, and a join can only show as a level change."""
    return (0.3 * torch.sin(2 * math.pi * hz * torch.arange(int(seconds * sample_rate)) / sample_rate)).numpy()


def short_time_level_db(audio, window=64):
    frames = audio[: len(audio) // window * window].reshape(-1, window)
    return 10 * np.log10((frames**2).mean(axis=1) + 1e-20)


def test_every_join_keeps_a_steady_tone_at_its_level():
    """Crossfades sum to one: a steady tone copied run by run, at random runs or at the
    head's own choices, keeps its level across every join within 0.05 dB. The halves of a
    join that did not sum to one would bump it by up to 3 dB every 128 ms."""
    tone = steady_tone()
    config = CascadeConfig()
    made = [baselines.random_runs(tone, tone, config, np.random.default_rng(seed)) for seed in range(3)]
    head = PointerHead(2 * config.frame_dim, 2, config).eval()
    sources = [head.codec.encode(torch.from_numpy(tone)[None])] * 2
    with torch.no_grad():
        frames, _ = head(torch.randn(1, sources[0].shape[2], 2 * config.frame_dim), sources)
        made.append(head.codec.decode(frames, len(tone))[0].numpy())
    inside = slice(4, -4)  # the clip's own ends fade in and out
    for audio in made:
        level = short_time_level_db(audio)[inside]
        assert np.abs(level - short_time_level_db(tone)[inside]).max() < 0.05, np.abs(level - level.mean()).max()


def test_continuity_carries_runs_on_and_the_corpus_is_the_target():
    """With the target as the corpus no run comes from the input; the continuity prior makes
    most chunks carry on the previous chunk's run, where without it few do."""
    torch.manual_seed(0)
    x, y = noise_frames([1.0], T=96, seed=3), noise_frames([1.0], T=96, seed=4)
    carried = {}
    for continuity in (0.0, 4.0):
        head = Cascade(pointer_config(pointer_continuity=continuity)).eval().stage1.pointer
        with torch.no_grad():
            _, runs = head.choose(torch.randn(1, 96, 32), [x, y])
        runs = runs[0, :, 0]
        assert (runs // 96 == 1).all(), "a run from the input"
        carried[continuity] = (runs.diff() == head.chunk_frames).float().mean().item()
    assert carried[4.0] >= 0.75 and carried[0.0] <= 0.25, carried


def test_with_the_target_as_corpus_both_stages_copy_the_target_alone():
    """Stage 1's output is no corpus either: its 1.0x residual is half the aligned input."""
    model = Cascade(pointer_config()).eval()
    for stage in (model.stage1, model.stage2):
        allowed = stage.pointer.allowed(48, "cpu")  # (n_chunks, n_sources * 48)
        assert allowed[:, -48:].any(dim=1).all() and not allowed[:, :-48].any()
    assert Cascade(pointer_config(pointer_corpus="all")).stage2.pointer.allowed(48, "cpu")[:, :96].any()


def test_the_pitch_class_filter_is_librosas_and_the_objective_reads_the_metrics_windows():
    import librosa
    import quality
    from model import pitch_class_filter
    for rate, n_fft in ((16000, 2048), (8000, 256), (44100, 4096)):
        torch.testing.assert_close(pitch_class_filter(rate, n_fft),
                                   torch.from_numpy(librosa.filters.chroma(sr=rate, n_fft=n_fft, tuning=0.0)), rtol=0, atol=1e-6)
    assert (objective.CHROMA_FFT, objective.CHROMA_HOP) == (quality.CHROMA_FFT, quality.CHROMA_HOP)


def test_the_run_chroma_names_a_tones_pitch_class_and_the_choice_follows_it():
    """A run's chroma peaks at its tone's pitch class. Asked for an A, with one band (loudness
    alone) the head cannot tell the target's A from its equally loud E-flat; with the chroma
    distance it copies the A."""
    t = torch.arange(32000) / 16000  # each half long enough to hold runs min_shift away from every chunk

    def tone(hz):
        return sum(torch.sin(2 * math.pi * hz * h * t) / h for h in (1, 2, 3))[None]

    picked_a = {}
    for chroma in (0.0, 1.0):
        config = CascadeConfig(pointer_bands=1, pointer_chroma=chroma)
        head = PointerHead(2 * config.frame_dim, 2, config).eval()
        a, e_flat = (head.codec.encode(tone(hz)) for hz in (440.0, 311.13))
        half = a.shape[2] // 2
        target = torch.cat([a[..., :half], e_flat[..., half:]], dim=2)
        with torch.no_grad():
            _, runs = head.choose(torch.zeros(1, a.shape[2], 2 * config.frame_dim), [a, target])
        picked_a[chroma] = (runs[0, :, 0] - a.shape[2] + config.chunk_frames // 2 <= half).float().mean().item()
    assert head.run_chroma(a)[0, 10:-20].argmax(dim=-1).eq(9).all()  # A is pitch class 9 (C = 0)
    assert head.run_chroma(e_flat)[0, 10:-20].argmax(dim=-1).eq(3).all()
    assert picked_a[1.0] == 1.0 and picked_a[0.0] <= 0.75, picked_a


def test_the_pointer_works_on_clips_too_short_for_min_shift():
    model = Cascade(pointer_config(min_shift_frames=100)).eval()
    x, y = noise_frames([0.5, 0.0], T=10, seed=5), noise_frames([0.2, 0.0], T=10, seed=6)
    out, stats = model(x, y)
    assert torch.isfinite(out).all() and out[1].abs().max() < 1e-9


# -----------------------------------------------------------------------------
# codec


@pytest.mark.parametrize("n_samples", [128, 1000, 16000, 48007])
def test_codec_round_trip_and_rms(n_samples):
    codec = MDCTCodec(128)
    audio = music_like(n_samples)
    frames = codec.encode(audio)
    assert frames.shape == (2, 128, math.ceil(n_samples / 128) + 1)
    torch.testing.assert_close(codec.decode(frames, n_samples), audio, rtol=0, atol=2e-6)
    expected = rms(audio[:, :, None], 0.0).view(-1) * math.sqrt(n_samples / (128 * frames.shape[-1]))
    torch.testing.assert_close(rms(frames, 0.0).view(-1), expected, rtol=1e-5, atol=0)


def test_combined_rms_is_the_mean_square_of_the_two():
    x, y = noise_frames([3.0]), noise_frames([4.0])
    assert combined_rms(x, y, FLOOR).item() == pytest.approx(math.sqrt(12.5), rel=1e-6)


# -----------------------------------------------------------------------------
# training


def tiny_train(out_dir, *args):
    """train.py's path and arguments for a tiny run into out_dir."""
    return [os.path.join(HERE, "train.py"), f"--out_dir={out_dir}", *TINY_RUN, *args]


def run_train(out_dir, *args, env=None, timeout=120):
    return subprocess.run([sys.executable, *tiny_train(out_dir, *args)],
                          capture_output=True, text=True, timeout=timeout, cwd=HERE, env={**os.environ, **(env or {})})


def sha1(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    """A finished one-epoch tiny run, shared: a test that changes a run works on a copy (copy_of)."""
    folder = tmp_path_factory.mktemp("one_epoch")
    result = run_train(folder, "--epochs=1")
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    """The tiny run as run_train makes it (two epochs), and what it printed; shared likewise."""
    folder = tmp_path_factory.mktemp("two_epochs")
    return folder, run_train(folder)


def copy_of(run, folder):
    shutil.copytree(run, folder, dirs_exist_ok=True)
    return folder


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


def np_finite(a):
    import numpy as np
    return bool(np.isfinite(a).all())


def test_a_fresh_run_never_overwrites_an_earlier_run(tmp_path, capsys, one_epoch_run):
    copy_of(one_epoch_run, tmp_path)
    before = {p: sha1(p) for p in checkpointing.files(tmp_path)}
    result = in_process("train", tiny_train(tmp_path, "--epochs=1")[1:], capsys)
    assert result.returncode != 0 and "--resume=auto" in result.stderr
    assert {p: sha1(p) for p in checkpointing.files(tmp_path)} == before


def test_nan_abort_names_the_parameter_and_keeps_checkpoints(tmp_path, one_epoch_run):
    copy_of(one_epoch_run, tmp_path)
    before = {p: sha1(p) for p in checkpointing.files(tmp_path)}
    steps = checkpointing.load(checkpointing.files(tmp_path)[0])["step"]
    result = run_train(tmp_path, "--resume=auto", env={train.TEST_NAN_STEP: str(steps + 2)})
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


def test_overrides_are_type_checked_and_unknown_names_rejected():
    assert training.parse_overrides(["--lr=3e-4", "--epochs=2", "--shuffle_targets=true"], train.HYPERPARAMETERS) == {
        **train.HYPERPARAMETERS, "lr": 3e-4, "epochs": 2, "shuffle_targets": True}
    with pytest.raises(SystemExit, match="expected int"):
        training.parse_overrides(["--epochs=ten"], train.HYPERPARAMETERS)
    with pytest.raises(SystemExit, match="expected bool"):
        training.parse_overrides(["--shuffle_targets=maybe"], train.HYPERPARAMETERS)
    with pytest.raises(SystemExit, match="unknown hyperparameter 'learning_rate'.*valid names: .*lr"):
        training.parse_overrides(["--learning_rate=1e-3"], train.HYPERPARAMETERS)
    with pytest.raises(SystemExit, match="--name=value"):
        training.parse_overrides(["epochs=3"], train.HYPERPARAMETERS)


def test_bad_override_exits_non_zero_before_training(tmp_path, capsys):
    result = in_process("train", tiny_train(tmp_path, "--batch_size=0")[1:], capsys)
    assert result.returncode != 0 and "--batch_size=0 must be > 0" in result.stderr
    assert not checkpointing.files(tmp_path)


def test_objective_is_finite_for_silent_inputs_targets_and_outputs():
    torch.manual_seed(0)
    model = Cascade(tiny_config())
    x, y = noise_frames([0.0, 0.3, 1e-9, 0.2], seed=12), noise_frames([0.3, 0.0, 0.2, 0.2], seed=13)
    out, _ = model(x, y)
    out = torch.cat([out[:3], out[3:] * 0.0])  # and a silent output
    hp = {**train.HYPERPARAMETERS, "recon_weight": 0.05, "novelty_weight": 0.5, "harmony_weight": 1.0, "onsets_weight": 1.0}
    loss, terms = objective.objective(out, x, y, MDCTCodec(16), hp)
    loss.backward()
    assert set(terms) == {"follow", "sound", "harmony", "onsets", "copy", "novelty", "recon"}
    assert terms["onsets"] < 1e3, terms  # a silent input has no onsets: the term stays on the scale of music's
    assert math.isfinite(loss.item()) and all(math.isfinite(v) for v in terms.values())
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name


def test_pearson_matches_numpy_and_is_zero_for_silence():
    import numpy as np
    a, b = torch.randn(3, 16, 20), torch.randn(3, 16, 20)
    b[1] += 2 * a[1]
    expected = [np.corrcoef(a[i].flatten().numpy(), b[i].flatten().numpy())[0, 1] for i in range(3)]
    torch.testing.assert_close(objective.pearson(a, b, FLOOR), torch.tensor(expected, dtype=torch.float32), rtol=1e-4, atol=1e-5)
    assert objective.pearson(torch.zeros(1, 4, 4), b[:1, :4, :4], FLOOR).item() == 0.0


def test_lag_correlation_finds_delayed_copies_in_numpy_and_torch_alike():
    import numpy as np
    audio = np.random.default_rng(1).standard_normal(16000)
    for delay, expected in ((0, 1.0), (4000, 0.75**0.5), (12000, 0.0)):  # 0, 0.25 s (3/4 overlap), 0.75 s (beyond 0.5 s)
        delayed = np.concatenate([np.zeros(delay), audio[: len(audio) - delay]])
        numpy_value = verdict.max_lag_correlation(delayed, audio, 16000)
        torch_value = objective.lag_correlation(torch.from_numpy(delayed)[None], torch.from_numpy(audio)[None], 8000, FLOOR).item()
        assert numpy_value == pytest.approx(torch_value, abs=1e-5)
        assert numpy_value == pytest.approx(expected, abs=0.05), delay


def test_envelope_bars_use_one_absolute_scale_and_gaps_are_structure():
    import numpy as np
    t = np.arange(48_000) / 48_000
    loud = 0.9 * np.sin(2 * np.pi * 440 * t)
    assert set(health_report.envelope_bars(verdict.envelope_db(loud, 1000))) == {"█"}
    assert set(health_report.envelope_bars(verdict.envelope_db(loud * 1e-4, 1000))) == {" "}
    assert verdict.envelope_spread(loud * (t > 0.5), 48_000) > 10 * max(verdict.envelope_spread(loud, 48_000), 0.1)
    assert verdict.range_ratio(0.5, 1.0, 2.0) == 0.5 and verdict.range_ratio(1.5, 1.0, 2.0) == 1.0 and verdict.range_ratio(4.0, 2.0, 1.0) == 2.0


def demo_validation_pairs(n_pairs):
    """Pairs of the default run's validation pieces, spread over all of them. # [(input, target, other)] numpy"""
    import numpy as np
    hp = train.HYPERPARAMETERS
    tracks = data.run_tracks(hp)
    _, val_tracks = data.split_by_file(tracks, hp["val_fraction"], hp["seed"])
    pairs = data.PairDataset(val_tracks, int(hp["segment_seconds"] * hp["sample_rate"]))
    other = [t for t in tracks if t not in val_tracks][0]
    picks = np.linspace(0, len(pairs) - 1, n_pairs).astype(int)
    return [(*(a.numpy() for a in pairs[i]), other.read(32000 * (k + 1), 32000)) for k, i in enumerate(picks)]


def test_every_copy_like_reference_is_judged_copy_every_noise_hiss_and_other_music_unrelated():
    import numpy as np
    rng = np.random.default_rng(0)
    other_music = []
    for x_in, x_tgt, other in demo_validation_pairs(6):
        for name, reference in baselines.references(x_in, x_tgt, other, 16000, rng).items():
            judged = verdict.verdict(verdict.measure(reference, x_in, x_tgt, 16000))
            if name.startswith(("copy", "50/50", "target delayed")):
                assert judged == "copy", name
            elif "noise" in name:
                assert judged == "hiss", name
            else:
                other_music.append(judged)  # music, but not made of these two clips
        for name in ("random runs", "Let it Bee"):  # mosaics of the pair itself are related to it
            # random runs of input and target, as the span was calibrated on (of the target alone: README)
            made = baselines.random_runs(x_in, x_tgt, CascadeConfig(pointer_corpus="all"), rng) if name == "random runs" \
                else baselines.let_it_bee(x_in, x_tgt)
            assert verdict.measure(made, x_in, x_tgt, 16000)["spectrum_span"] <= verdict.UNRELATED_SPAN, name
    # unrelated in 91% of 44 demo pairs (experiments.py --thresholds); never a copy or hiss
    assert set(other_music) <= {"unrelated", "blend"} and other_music.count("unrelated") >= 5, other_music


def test_each_hiss_rule_catches_a_case_that_no_other_rule_does():
    """Music with its loudness flattened keeps its notes (structure) but not its envelope;
    music under a noise floor 20 dB down keeps its envelope but its peaks no longer persist
    or move. Dropping either rule lets its case through as the music it was made from."""
    rng = np.random.default_rng(0)
    for x_in, x_tgt, _ in demo_validation_pairs(3):
        music = baselines.random_runs(x_in, x_tgt, CascadeConfig(pointer_corpus="all"), rng)  # of input and target
        assert verdict.verdict(verdict.measure(music, x_in, x_tgt, 16000)) != "hiss"
        flattened = music / (np.sqrt(np.convolve(music**2, np.ones(640) / 640, mode="same")) + 1e-4)
        noisy = music + rng.standard_normal(len(music)) * np.sqrt(np.mean(music**2)) * 0.1
        flat, floor = (verdict.measure(baselines.at_level(a, x_in, x_tgt), x_in, x_tgt, 16000) for a in (flattened, noisy))
        assert verdict.verdict(flat) == verdict.verdict(floor) == "hiss"
        assert max(flat["persistence"], flat["motion"]) >= verdict.LOOSE_STRUCTURE and flat["envelope"] < verdict.FLAT_ENVELOPE
        assert max(floor["persistence"], floor["motion"]) < verdict.LOOSE_STRUCTURE and floor["envelope"] >= verdict.FLAT_ENVELOPE


def test_each_loss_term_is_near_zero_for_what_it_asks_for_and_large_for_what_it_rules_out():
    """follow, harmony, onsets: zero for the input itself; sound, recon: zero for the target; copy:
    positive for copies, a delayed copy and the mix, zero for noise and another piece;
    novelty: large for a copy, zero for noise. A flipped sign or hinge fails here."""
    hp, codec = train.HYPERPARAMETERS, MDCTCodec(128)
    rng = np.random.default_rng(0)

    def terms(audio, x_in, x_tgt):
        return objective.objective(*(codec.encode(torch.from_numpy(np.asarray(a, dtype=np.float32))[None])
                                     for a in (audio, x_in, x_tgt)), codec, hp)[1]

    for x_in, x_tgt, other in demo_validation_pairs(2):
        made = baselines.references(x_in, x_tgt, other, 16000, rng)
        of = {name: terms(audio, x_in, x_tgt) for name, audio in made.items()}
        unlike = ("white noise", "another file")
        assert of["copy of input"]["follow"] < 0.01 and min(of[n]["follow"] for n in unlike) > 1.0
        assert of["copy of input"]["harmony"] < 0.01 and min(of[n]["harmony"] for n in unlike) > 0.2
        assert of["copy of input"]["onsets"] < 0.01 and min(of[n]["onsets"] for n in unlike) > 0.5
        assert of["copy of target"]["sound"] < 0.01 and of["white noise"]["sound"] > 0.3
        assert of["copy of target"]["recon"] < 0.01 and of["white noise"]["recon"] > 1.0
        for name in ("copy of input", "copy of target", "50/50 mix", "target delayed 250 ms"):
            assert of[name]["copy"] > 0.1, name
        for name in ("white noise", "noise, target spectrum", "another file"):
            assert of[name]["copy"] == 0.0, name
        assert of["copy of input"]["novelty"] > 0.4 and of["white noise"]["novelty"] < 0.02
    # onsets are rises: a band level stepping up 20 dB is one, stepping back down is none
    step = torch.tensor([0.0, 0.0, 20.0, 20.0, 0.0, 0.0])[None, :, None].expand(1, 6, 3)
    assert objective.onset_strength(step).tolist() == [[0.0, 6.0, 0.0, 0.0, 0.0]]


def test_quality_metrics_give_the_known_answers_on_copies_runs_and_grids():
    import numpy as np
    import quality
    rng = np.random.default_rng(0)
    grid = 0.128
    onset_f_of_runs = []
    for x_in, x_tgt, _ in demo_validation_pairs(3):
        heard_in, heard_tgt = quality.features(x_in, 16000), quality.features(x_tgt, 16000)
        copy = quality.measure(quality.features(x_in, 16000), heard_in, heard_tgt, grid)
        assert copy["chroma_in"] > 1 - 1e-6 and copy["onset_f_in"] == 1.0
        assert quality.frechet_distance(heard_tgt, heard_tgt) < 1e-6 * quality.frechet_distance(heard_in, heard_tgt)
        runs = baselines.random_runs(x_in, x_tgt, CascadeConfig(), rng)
        onset_f_of_runs.append(quality.measure(quality.features(runs, 16000), heard_in, heard_tgt, grid)["onset_f_in"])
        assert 0.1 < copy["chroma_in"] - quality.chroma_similarity(heard_tgt, heard_in)  # the next segment plays other chords
    assert max(onset_f_of_runs) < 1.0 and np.median(onset_f_of_runs) < 0.8, onset_f_of_runs  # measured 0.45 over 44 pairs
    on, off = np.arange(10) * grid + 0.004, np.arange(10) * grid + grid / 2
    assert quality.grid_share(on, grid) == 1.0 and quality.grid_share(off, grid) == 0.0
    assert np.isnan(quality.grid_share(np.zeros(0), grid))


def test_every_metric_is_defined_on_digital_silence():
    """Songs open with silence: a silent input, target or output gets metrics, never a crash."""
    import numpy as np
    import quality
    silence, noise = np.zeros(16000, np.float32), np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    for out, x_in, x_tgt in ((silence, noise, noise), (noise, silence, noise), (noise, noise, silence)):
        assert verdict.verdict(verdict.measure(out, x_in, x_tgt, 16000)) in verdict.VERDICTS
        heard = [quality.features(a, 16000) for a in (out, x_in, x_tgt)]
        metrics = quality.measure(*heard, 0.128)
        assert np.isnan(metrics["chroma_in"]) == (x_in is silence) and np.isfinite(metrics["mfcc_tgt"])
    assert np.abs(baselines.let_it_bee(silence, noise)).max() == 0.0  # nothing to follow: silence, not NaN


def test_let_it_bee_rebuilds_the_input_from_its_own_frames():
    """Given the input's own STFT frames as templates, the identity activation is the exact
    answer: the restricted KL updates must find it to within -30 dB (measured -36 to -38 dB)."""
    import librosa
    import numpy as np
    for x_in, x_tgt, _ in demo_validation_pairs(2):
        rebuilt = baselines.let_it_bee(x_in, x_in)
        V, Y = (np.abs(librosa.stft(a, n_fft=baselines.LET_IT_BEE_FFT, hop_length=baselines.LET_IT_BEE_HOP))
                for a in (x_in, rebuilt))
        assert 10 * np.log10(((Y - V) ** 2).sum() / (V**2).sum()) < -30.0
        assert len(rebuilt) == len(x_in)
        assert abs(np.sqrt(np.mean(rebuilt**2)) - np.sqrt((np.mean(x_in**2) + np.mean(x_in**2)) / 2)) < 1e-4
        mosaic = baselines.let_it_bee(x_in, x_tgt)  # made of the target's frames, it is not the input
        assert 10 * np.log10(((np.abs(librosa.stft(mosaic, n_fft=1024, hop_length=512)) - V) ** 2).sum() / (V**2).sum()) > -10


def test_paired_comparison_finds_a_real_difference_and_no_false_one():
    import numpy as np
    import comparison
    rng = np.random.default_rng(0)
    baseline = rng.standard_normal(40)
    better = comparison.paired(baseline + 0.5 + 0.1 * rng.standard_normal(40), baseline, True, rng)
    assert better["outcome"] == "better" and better["low"] > 0 and better["better_share"] == 1.0 and better["pairs"] == 40
    assert comparison.paired(baseline + 0.5, baseline, False, rng)["outcome"] == "worse"  # lower is better there
    noise = comparison.paired(baseline + 0.3 * rng.standard_normal(40), baseline, True, rng)
    assert noise["outcome"] == "no difference" and noise["low"] < 0 < noise["high"]
    with_gaps = comparison.paired(np.r_[baseline[:30] + 1, [np.nan] * 10], baseline, True, rng)
    assert with_gaps["pairs"] == 30 and with_gaps["median"] == 1.0


def test_the_health_report_flags_a_moving_noise_not_only_a_flat_one():
    """Noise with the target's spectrum and loudness envelope passes the envelope check,
    so the blend verdict must catch it."""
    import numpy as np
    rng = np.random.default_rng(1)
    pairs = demo_validation_pairs(3)
    judged = []
    for x_in, x_tgt, other in pairs:
        moving = baselines.references(x_in, x_tgt, other, 16000, rng)["noise, target spectrum+envelope"]
        judged.append(verdict.measure(moving, x_in, x_tgt, 16000))
    h = {"scale1": 1.0, "scale2": 1.0, "rms_ratio": 1.0, "corr_in": 0.0, "corr_tgt": 0.0,
         **health_report.judged_health(judged, (pairs[0][0], pairs[0][1], moving))}
    lines, warnings = health_report.health_lines(h)
    assert "constant_output" not in warnings and warnings == ["not_a_blend"], lines
    assert any("hiss:" in line for line in lines)


# -----------------------------------------------------------------------------
# the user's own audio, and generate.py


def write_collection(folder):
    """Six usable files at three rates, mono and stereo, WAV/FLAC/OGG, and three bad ones."""
    import numpy as np
    import soundfile as sf
    import data
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


def test_a_mixed_folder_trains_and_names_exactly_the_bad_files(tmp_path):
    good, bad = write_collection(tmp_path / "music")
    before = {p: sha1(p) for p in good + bad}
    result = run_train(tmp_path / "ck", f"--data_dir={tmp_path / 'music'}", f"--cache_dir={tmp_path / 'cache'}", "--epochs=1")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: skipping")]
    assert sorted(w.split(": ")[1].removeprefix("skipping ") for w in warnings) == sorted(bad), warnings
    assert "skipped 3 of 9 files" in result.stdout
    assert "train: 5 files" in result.stdout and "val: 1 files" in result.stdout and "step 1/" in result.stdout
    assert f"decoding {tmp_path / 'music'}" in result.stderr  # the cache build's progress bar
    assert {p: sha1(p) for p in good + bad} == before, "the user's files are only ever read"
    again = run_train(tmp_path / "ck2", f"--data_dir={tmp_path / 'music'}", f"--cache_dir={tmp_path / 'cache'}", "--epochs=1")
    assert again.returncode == 0 and again.stdout.count("warning: skipping") == 3  # from the cache now


def test_a_folder_of_only_bad_files_fails_before_any_model(tmp_path):
    _, bad = write_collection(tmp_path / "music")
    for path in os.listdir(tmp_path / "music"):
        full = str(tmp_path / "music" / path)
        if full not in bad and os.path.isfile(full):
            os.remove(full)
    import shutil
    shutil.rmtree(tmp_path / "music" / "sub")
    result = run_train(tmp_path / "ck", f"--data_dir={tmp_path / 'music'}", f"--cache_dir={tmp_path / 'cache'}")
    assert result.returncode != 0
    assert f"no usable audio in {tmp_path / 'music'}" in result.stderr and "too short" in result.stderr
    assert "model:" not in result.stdout


def test_split_puts_no_file_on_both_sides():
    import data
    tracks = [data.Track(f"file{i}", audio=torch.zeros(1000 * (i + 2)).numpy(), n_samples=1000 * (i + 2)) for i in range(20)]
    for seed in range(5):
        train_tracks, val_tracks = data.split_by_file(tracks, 0.2, seed)
        assert len(val_tracks) == 4 and len(train_tracks) == 16
        assert not {t.name for t in train_tracks} & {t.name for t in val_tracks}
        pairs = data.PairDataset(train_tracks, 500)
        assert {train_tracks[i].name for i, _ in pairs.pairs} <= {t.name for t in train_tracks}


def test_shuffle_targets_draws_from_another_file():
    import data
    tracks = [data.Track(f"file{i}", audio=torch.full((4000,), float(i)).numpy(), n_samples=4000) for i in range(3)]
    pairs = data.PairDataset(tracks, 1000, shuffle_targets=True, seed=1)
    for index, (track, _) in enumerate(pairs.pairs):
        x, y = pairs[index]
        assert x[0].item() == track and y[0].item() != track


def table_rows(stdout):
    """evaluate.py's first table: {row name: its cells}."""
    lines = stdout.splitlines()
    first = lines.index(next(line for line in lines if line.startswith("---"))) + 1
    body = lines[first:lines.index("", first)]
    return {line[:32].strip(): line[32:].split() for line in body}


@pytest.fixture(scope="module")
def tiny_checkpoint(one_epoch_run):
    """The one-epoch tiny run's checkpoint (an 8 kHz model), read by the generation tests."""
    return checkpointing.files(one_epoch_run)[0]


def generate_command(tmp_path, ckpt, input_path, target, out):
    return [sys.executable, os.path.join(HERE, "generate.py"), "--ckpt", str(ckpt), "--input", str(input_path),
            "--target", str(target), "--out", str(out), f"--cache_dir={tmp_path / 'cache'}"]


def in_process(script, argv, capsys):
    """A script's main(argv) run in this process, whose imports are paid once (torch and
    torch._dynamo, which AdamW imports, cost 3.5 s a process): its exit code, stdout and
    stderr, as the shell would see them (a SystemExit message goes to stderr, code 1)."""
    import types
    try:
        importlib.import_module(script).main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) or e.code is None else 1
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    captured = capsys.readouterr()
    return types.SimpleNamespace(returncode=code or 0, stdout=captured.out, stderr=captured.err)


def test_generate_keeps_the_input_length_and_fails_clearly_on_bad_checkpoints(tmp_path, tiny_checkpoint, capsys):
    import soundfile as sf
    ckpt = tiny_checkpoint
    n = int(2.5 * 0.25 * 44100)  # 2.5 segments, at another rate than the model's
    sf.write(tmp_path / "in.wav", np.stack([data.demo_piece(1, n / 44100, 44100)] * 2, axis=1), 44100)
    sf.write(tmp_path / "tgt.flac", data.demo_piece(2, 0.4, 22050), 22050)
    generate = generate_command(tmp_path, ckpt, tmp_path / "in.wav", tmp_path / "tgt.flac", tmp_path / "out.wav")[2:]
    result = in_process("generate", generate, capsys)
    assert result.returncode == 0, result.stderr
    out, rate = sf.read(tmp_path / "out.wav")
    assert rate == 44100 and out.shape == (n, 2) and np.abs(out).max() <= 1.0  # the input's rate, channels and length
    assert "correlation output->input" in result.stdout and "blend verdict    " in result.stdout
    assert "level rule" in result.stdout and "real-time factor" in result.stdout
    assert "generating: 100%" in result.stderr and "decoding the target" in result.stderr  # the progress bars
    generate = generate[2:]  # without --ckpt

    # the blend evaluation judges generate.py's output file, and the checkpoint's validation pairs
    html = ["--html", str(tmp_path / "file_page")] if importlib.util.find_spec("matplotlib") else []
    result = in_process("evaluate", ["--input", str(tmp_path / "in.wav"), "--target", str(tmp_path / "tgt.flac"),
                                     "--output", str(tmp_path / "out.wav"), "--sample_rate=8000", *html], capsys)
    assert result.returncode == 0, result.stderr
    if html and os.path.exists(CHROMIUM) and importlib.util.find_spec("selenium"):  # generate.py's full-rate output plays
        problems, n_audio, _ = page_problems(tmp_path / "file_page" / "index.html", tmp_path / "file_page.png")
        assert problems == [] and n_audio == 4, problems
    (tmp_path / "corpus").mkdir()
    shutil.copy(tmp_path / "tgt.flac", tmp_path / "corpus" / "tgt.flac")  # generate.py's target may be a folder
    folder = in_process("evaluate", ["--input", str(tmp_path / "in.wav"), "--target", str(tmp_path / "corpus"),
                                     "--output", str(tmp_path / "out.wav"), "--sample_rate=8000"], capsys)
    assert folder.returncode == 0 and table_rows(folder.stdout) == table_rows(result.stdout), folder.stderr
    rows = table_rows(result.stdout)
    assert list(rows) == ["output", "copy of input", "copy of target", "50/50 mix", "target delayed 250 ms", "white noise",
                          "noise, target spectrum", "noise, target spectrum+envelope"], result.stdout
    assert rows["copy of input"][:4] == ["0%", "100%", "0%", "0%"] and rows["white noise"][:4] == ["0%", "0%", "100%", "0%"]
    result = in_process("evaluate", ["--ckpt", ckpt, "--pairs=3", f"--csv={tmp_path / 'eval.csv'}",
                                     f"--audio={tmp_path / 'audio'}", "--audio_pairs=0,2"], capsys)
    assert result.returncode == 0 and "3 pairs;" in result.stdout and result.stderr == "", result.stderr
    written = sorted(os.listdir(tmp_path / "audio"))
    assert {f"pair{i}_{name}.wav" for i in (0, 2) for name in ("input", "target", "trained_model", "Let_it_Bee",
                                                                "50_50_mix")} <= set(written)
    assert not any(name.startswith("pair1_") for name in written)
    if importlib.util.find_spec("matplotlib"):
        plotted = in_process("plot", ["--compare", str(tmp_path / "audio")], capsys)
        assert plotted.returncode == 0 and png_size(tmp_path / "audio" / "spectrograms.png")[1] > 0, plotted.stderr
    systems = ["trained model", "untrained model", "random runs", "Let it Bee"]
    assert list(table_rows(result.stdout))[:4] == systems and "another file" in table_rows(result.stdout)
    with open(tmp_path / "eval.paired.csv") as f:
        paired = list(csv.DictReader(f))
    assert {(r["metric"], r["baseline"]) for r in paired} == {(m, b) for m in ("chroma_in", "onset_f_in", "mfcc_tgt",
                                                                             "dist_tgt", "extra_onsets", "grid_onsets")
                                                            for b in ("untrained model", "random runs", "Let it Bee", "50/50 mix")}
    with open(tmp_path / "eval.pairs.csv") as f:
        per_pair = list(csv.DictReader(f))
    assert len(per_pair) == 3 * len(table_rows(result.stdout)) and {r["row"] for r in per_pair} >= set(systems)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(open(ckpt, "rb").read()[:5000])
    foreign = tmp_path / "foreign.pth"
    torch.save({"weights": torch.zeros(3)}, foreign)
    for bad, message in ((tmp_path / "missing.pth", "no such file"), (truncated, "not a readable checkpoint"),
                         (foreign, "not a checkpoint of this project")):
        # both scripts read checkpoints through checkpointing.load: evaluate.py once is enough
        for script, argv in [("generate", generate + ["--ckpt", str(bad)])] + [("evaluate", ["--ckpt", str(bad)])] * (bad == truncated):
            result = in_process(script, argv, capsys)
            assert result.returncode != 0 and str(bad) in result.stderr and message in result.stderr, result.stderr


def corpus_of(folder, files, model, out_rate, channels, clip=None):
    """A corpus.Corpus of the given {name: (audio, rate)} files, written under folder."""
    import soundfile as sf
    import corpus
    folder.mkdir(exist_ok=True)
    for name, (audio, rate) in files.items():
        sf.write(folder / name, audio, rate, subtype="FLOAT" if name.endswith(".wav") else None)
    target = folder / next(iter(files)) if len(files) == 1 else folder
    return corpus.Corpus(str(target), model.stage1.pointer, model.config.sample_rate, out_rate, channels,
                         str(folder.parent / "cache"), clip)


def test_the_full_rate_render_is_the_models_output_and_keeps_stereo(tmp_path):
    """Rendered at the model's own rate, the output is the model's to float precision; at
    44.1 kHz, downmixed and resampled back, within -50 dB of it (measured: -67 dB). An
    input's two different channels stay different."""
    import soxr
    import rendering
    model = Cascade(CascadeConfig()).eval()
    left, right = data.demo_piece(1, 5.0, 44100), data.demo_piece(3, 5.0, 44100)
    stereo = np.stack([left, right], axis=1).astype(np.float32)
    in_model = soxr.resample(stereo.mean(axis=1), 44100, 16000).astype(np.float32)
    files = {"tgt.flac": (data.demo_piece(2, 3.0, 48000), 48000)}
    for out_rate, tolerance_db in ((16000, -100), (44100, -50)):
        material = corpus_of(tmp_path / f"t{out_rate}", files, model, out_rate, 2)
        full_input = stereo if out_rate == 44100 else np.repeat(in_model[:, None], 2, axis=1)
        out, out_model, _ = rendering.Generator(model, material, 32000).generate(in_model, full_input, progress=False)
        assert out.shape == full_input.shape
        back = soxr.resample(out.mean(axis=1), out_rate, 16000)[: len(out_model)] if out_rate != 16000 else out.mean(axis=1)
        error_db = 10 * np.log10(np.mean((back - out_model) ** 2) / np.mean(out_model ** 2))
        assert error_db < tolerance_db, (out_rate, error_db)
    # the target is mono here: the channels differ by the input's difference, carried by the residuals
    side, input_side = out[:, 0] - out[:, 1], stereo[:, 0] - stereo[:, 1]
    assert np.corrcoef(side, input_side)[0, 1] > 0.95 and np.abs(side).mean() > 0.01 * np.abs(out).mean()


def test_every_window_draws_on_the_whole_corpus_and_the_copy_guard_holds_in_it(tmp_path):
    """A corpus choice is the clip's own choice when the corpus is the clip's target; a
    tone that only the end of a long target holds is found there, from a folder of two
    files; and with the input itself in the corpus no run comes from its own moment."""
    model = Cascade(CascadeConfig()).eval()
    D, R, shift = 128, 16, model.config.min_shift_frames
    codec = MDCTCodec(D)
    music = data.demo_piece(5, 2.0, 16000).astype(np.float32)
    target = data.demo_piece(6, 2.0, 16000).astype(np.float32)
    x_in, x_tgt = (codec.encode(torch.from_numpy(a)[None]) for a in (music, target))
    material = corpus_of(tmp_path / "same", {"t.wav": (target, 16000)}, model, 16000, 1).material
    T = x_in.shape[2]
    with torch.no_grad():
        _, own = model(x_in, x_tgt)
        # the min_shift rule of the clip's target, as the copy guard of a recording at frame R + 2
        _, drawn = model(x_in, x_tgt, replace(material, clip_frame=torch.tensor([R + 2])))
    for stage, n_sources in (("runs1", 2), ("runs2", 3)):  # the material stands in for the target, frame for frame
        target_frames = own[stage] - (n_sources - 1) * T
        assert torch.equal(drawn[stage] - n_sources * T - (R + 2), target_frames), (stage, drawn[stage], target_frames)

    t = np.arange(4 * 16000) / 16000
    chord = sum(np.sin(2 * np.pi * f * t[:16000]) for f in (523.3, 659.3, 784.0)) * 0.1
    long_target = data.demo_piece(7, 4.0, 16000) * 0.3
    long_target[3 * 16000 :] = chord  # the tone lives in the last second only
    files = {"a.wav": (data.demo_piece(8, 3.0, 16000), 16000), "b.wav": (long_target.astype(np.float32), 16000)}
    folder = corpus_of(tmp_path / "folder", files, model, 16000, 1)
    assert [os.path.basename(r.path) for r in folder.recordings] == ["a.wav", "b.wav"]
    x = codec.encode(torch.from_numpy(np.resize(chord, 32000).astype(np.float32))[None])
    with torch.no_grad():
        _, stats = model(x, codec.encode(torch.from_numpy(long_target[:32000].astype(np.float32))[None]), folder.material)
    chunks = stats["runs2"][0, 2:-2, 0] - 3 * x.shape[2]  # corpus frames; the chunks clear of the clip's edges
    places = [folder.locate(int(p)) for p in chunks]
    assert all(os.path.basename(r.path) == "b.wav" and 3 * 16000 <= frame * D < 4 * 16000 for r, frame in places), places

    song = data.demo_piece(9, 6.0, 16000).astype(np.float32)
    mine = corpus_of(tmp_path / "mine", {"song.wav": (song, 16000)}, model, 16000, 1, clip=song)
    assert mine.clip_frame == R + 2
    for start in (0, 16000, 32000):
        x = codec.encode(torch.from_numpy(song[start : start + 32000])[None])
        at = replace(mine.material, clip_frame=mine.material.clip_frame + start // D)
        with torch.no_grad():
            _, stats = model(x, x, at)
        for name in ("runs1", "runs2"):
            n_sources = 2 if name == "runs1" else 3
            frames = stats[name][0, :, 0] - n_sources * x.shape[2] - (R + 2)  # in the song
            own_moment = start // D + torch.arange(len(frames)) * R
            assert (frames - own_moment).abs().min() >= shift, (start, name)


def test_generate_refuses_bad_input_and_an_interrupt_leaves_no_file(tmp_path, tiny_checkpoint):
    import signal
    import soundfile as sf
    song = data.demo_piece(1, 1.0, 44100)
    sf.write(tmp_path / "in.wav", song, 44100)
    sf.write(tmp_path / "low.wav", data.demo_piece(1, 1.0, 4000), 4000)  # below the tiny model's 8 kHz
    sf.write(tmp_path / "six.wav", np.stack([song] * 6, axis=1), 44100)
    (tmp_path / "empty_corpus").mkdir()
    (tmp_path / "empty_corpus" / "notes.txt").write_text("not audio")
    cases = [("in.wav", "empty_corpus", "out.wav", ["no usable audio", "empty_corpus"]),
             ("low.wav", "in.wav", "out.wav", ["4000 Hz", "below the model's 8000 Hz"]),
             ("six.wav", "in.wav", "out.wav", ["6 channels", "mono or stereo"]),
             ("in.wav", "in.wav", "missing/out.wav", ["does not exist", "missing"])]
    import generate
    for input_name, target, out, messages in cases:  # in this process: SystemExit carries the message (exit status 1)
        with pytest.raises(SystemExit) as refused:
            generate.main(generate_command(tmp_path, tiny_checkpoint, tmp_path / input_name, tmp_path / target,
                                           tmp_path / out)[2:])
        assert all(m in str(refused.value.code) for m in messages), (input_name, refused.value.code)
        assert not os.path.exists(tmp_path / out)
    sf.write(tmp_path / "long.wav", np.stack([data.demo_piece(2, 60.0, 44100)] * 2, axis=1), 44100)
    command = generate_command(tmp_path, tiny_checkpoint, tmp_path / "long.wav", tmp_path / "in.wav", tmp_path / "o.flac")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE)
    seen = ""
    while "generating:" not in seen:
        seen += process.stderr.read(1)
        assert process.poll() is None, seen
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted: nothing written to" in stderr, stderr
    assert sorted(os.listdir(tmp_path)) == sorted(["in.wav", "low.wav", "six.wav", "empty_corpus", "cache", "long.wav"])


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian's chromium and chromium-driver


def skip_without_a_browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER) and importlib.util.find_spec("selenium")
            and importlib.util.find_spec("matplotlib")):
        pytest.skip("the listening page is tested in headless Chromium: apt-get install chromium chromium-driver; "
                    "pip install selenium==4.38.0 matplotlib==3.11.2 (.ci/run does)")


def page_problems(page, screenshot):
    """Open the page from disk in headless Chromium and list what is wrong with it: an <audio>
    whose metadata did not load or whose duration is not its file's, an image that did not
    decode, an error on the console. Writes a screenshot either way."""
    import soundfile as sf
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1700,1100"):
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
    return problems + [f"console: {message}" for message in console], len(audio), len(images)


def test_the_listening_page_plays_and_shows_every_clip_in_a_real_browser(tmp_path, tiny_checkpoint, capsys):
    skip_without_a_browser()
    import listening
    page = tmp_path / "page"
    result = in_process("evaluate", ["--ckpt", tiny_checkpoint, "--pairs=3", f"--html={page}", "--html_pairs=2"], capsys)
    assert result.returncode == 0, result.stderr
    problems, n_audio, n_images = page_problems(page / "index.html", tmp_path / "shot.png")
    assert problems == [] and n_audio == n_images == 2 * 7, problems
    assert png_size(tmp_path / "shot.png")[0] > 0
    text = (page / "index.html").read_text()
    assert "http" not in text.replace("http-equiv", "") and "<script" not in text  # nothing from outside, no script
    assert all(name in text for name in ("trained model", "untrained model", "Let it Bee", "random runs", "50/50 mix",
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


# -----------------------------------------------------------------------------
# faults: every one injected for real


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


def test_resume_across_an_epoch_boundary_is_bit_identical(tmp_path, one_epoch_run, two_epoch_run):
    split = copy_of(one_epoch_run, tmp_path / "split")  # epoch 1 of the two-epoch run's exact config
    result = run_train(split, "--epochs=2", "--resume=auto")
    assert result.returncode == 0 and "resumed from" in result.stdout
    assert same_training_state(newest(two_epoch_run[0]), newest(split))


def start_train(out_dir, *args, env=None):
    return subprocess.Popen([sys.executable, "-u", *tiny_train(out_dir, *args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE, env={**os.environ, **(env or {})})


def wait_for_line(process, prefix):
    for line in process.stdout:
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting {prefix!r}; stderr: {process.stderr.read()}")


@pytest.fixture(scope="module")
def four_epochs_straight(tmp_path_factory):
    folder = tmp_path_factory.mktemp("straight")
    assert run_train(folder, "--epochs=4").returncode == 0
    return folder


@pytest.mark.parametrize("signum", [2, 15])  # SIGINT, SIGTERM
def test_an_interrupt_saves_and_resume_continues_exactly(tmp_path, signum, four_epochs_straight):
    process = start_train(tmp_path / "run", "--epochs=4")
    wait_for_line(process, "step 13/")  # mid epoch 2
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, err
    interrupted = newest(tmp_path / "run")
    assert os.path.basename(interrupted).startswith("interrupted_") and "continue with --resume=auto" in out
    assert run_train(tmp_path / "run", "--epochs=4", "--resume=auto").returncode == 0
    assert same_training_state(newest(four_epochs_straight), newest(tmp_path / "run"))


def test_an_interrupt_after_the_last_step_of_an_epoch_still_ends_that_epoch(tmp_path, four_epochs_straight):
    assert run_train(tmp_path, "--epochs=1").returncode == 0
    epoch_end = newest(tmp_path)
    state = checkpointing.load(epoch_end)
    state.update(epoch=0, epoch_step=state["step"], health=None)  # what a SIGTERM during that step writes
    os.remove(epoch_end)
    checkpointing.save(state, str(tmp_path / f"interrupted_epoch_1_step_{state['step']}.pth"))
    result = run_train(tmp_path, "--epochs=4", "--resume=auto")
    assert result.returncode == 0, result.stderr
    assert "epoch 1/4 | val loss" in result.stdout and f"saved {epoch_end}" in result.stdout
    assert same_training_state(newest(four_epochs_straight), newest(tmp_path))


def test_sigkill_during_a_save_leaves_earlier_checkpoints_intact(tmp_path):
    assert run_train(tmp_path, "--epochs=1").returncode == 0
    before = {p: sha1(p) for p in checkpointing.files(tmp_path)}
    process = start_train(tmp_path, "--epochs=2", "--resume=auto", env={checkpointing.TEST_SAVE_DELAY: "30"})
    wait_for_line(process, "step 20/")  # the epoch-2 save starts right after this step
    deadline = time.time() + 30
    while not any(n.endswith(".tmp") for n in os.listdir(tmp_path)) and time.time() < deadline:
        time.sleep(0.05)
    assert any(n.endswith(".tmp") for n in os.listdir(tmp_path)), "the save never started"
    process.kill()
    process.communicate()
    assert {p: sha1(p) for p in checkpointing.files(tmp_path)} == before
    for path in before:
        checkpointing.load(path)
    result = run_train(tmp_path, "--epochs=2", "--resume=auto")
    assert result.returncode == 0 and f"resumed from {newest_of(before)}" in result.stdout
    assert not any(n.endswith(".tmp") for n in os.listdir(tmp_path))


def newest_of(paths):
    return max(paths, key=checkpointing.step_of)


def test_bad_checkpoints_are_skipped_by_auto_and_refused_by_path(tmp_path, capsys, one_epoch_run):
    copy_of(one_epoch_run, tmp_path)
    good = newest(tmp_path)
    truncated, foreign = tmp_path / "epoch_9_step_999.pth", tmp_path / "epoch_8_step_998.pth"
    truncated.write_bytes(open(good, "rb").read()[:3000])
    torch.save({"something": "else"}, foreign)
    result = run_train(tmp_path, "--epochs=2", "--resume=auto")
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


def test_bad_sample_values_are_caught_when_reading_and_silence_trains(tmp_path):
    import numpy as np
    import soundfile as sf
    import data
    music = tmp_path / "music"
    music.mkdir()
    for i in range(4):
        sf.write(music / f"song{i}.wav", data.demo_piece(300 + i, 1.6, 8000), 8000)
    for i in range(2):
        sf.write(music / f"silence{i}.wav", np.zeros(12800, np.float32), 8000)
    poisoned = {"nan.wav": float("nan"), "inf.wav": float("inf"), "huge.wav": 100.0}
    for name, value in poisoned.items():
        audio = data.demo_piece(400, 1.6, 8000)
        audio[5000] = value
        sf.write(music / name, audio, 8000, subtype="FLOAT")
    result = run_train(tmp_path / "ck", f"--data_dir={music}", f"--cache_dir={tmp_path / 'cache'}", "--epochs=1",
                       "--recon_weight=0.05")
    assert result.returncode == 0, result.stderr
    for name, reason in (("nan.wav", "NaN or Inf"), ("inf.wav", "NaN or Inf"), ("huge.wav", "beyond")):
        assert any(line.startswith(f"warning: skipping {music / name}: ") and reason in line
                   for line in result.stdout.splitlines()), name
    assert "nan" not in " ".join(line for line in result.stdout.splitlines() if line.startswith("step ")).lower()


def test_a_second_run_on_the_same_folder_refuses_and_a_dead_run_does_not_block(tmp_path, capsys):
    first = start_train(tmp_path, "--epochs=50")
    wait_for_line(first, "step 1/")
    second = in_process("train", tiny_train(tmp_path, "--resume=auto")[1:], capsys)
    assert second.returncode != 0 and f"another run (pid {first.pid}) is training into {tmp_path}" in second.stderr
    first.kill()
    first.communicate()
    assert (tmp_path / ".lock").exists()  # the crashed run's lock file is still there...
    third = run_train(tmp_path, "--resume=auto", "--epochs=1")
    assert third.returncode == 0, third.stderr  # ...but the kernel released its lock


# -----------------------------------------------------------------------------
# plot.py


def png_size(path):
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_plot_writes_the_health_figure_and_spectrograms(tmp_path, capsys, two_epoch_run):
    pytest.importorskip("matplotlib", reason="matplotlib is optional; CI installs it")
    import plot
    copy_of(two_epoch_run[0], tmp_path)
    result = in_process("plot", [str(tmp_path)], capsys)
    assert result.returncode == 0, result.stderr
    w, h = plot.FIGURE_INCHES
    assert png_size(tmp_path / "run_health.png") == (w * plot.DPI, h * plot.DPI)
    w, h = plot.SPECTROGRAM_INCHES
    assert png_size(tmp_path / "spectrograms_epoch_2.png") == (w * plot.DPI, h * plot.DPI)
    assert os.path.getsize(tmp_path / "run_health.png") > 20_000  # four panels of lines, not a blank canvas


def test_plot_explains_a_missing_or_empty_metrics_file(tmp_path):
    import plot
    with pytest.raises(SystemExit, match="no metrics file"):
        plot.read_metrics(str(tmp_path))
    (tmp_path / "metrics.csv").write_text(",".join(checkpointing.MetricsFile.COLUMNS) + "\n")
    with pytest.raises(SystemExit, match="has no rows yet"):
        plot.read_metrics(str(tmp_path))


# -----------------------------------------------------------------------------
# DDP: two gloo ranks on this CPU

EXACT = ["--dtype=float32", "--dropout=0"]  # dropout masks differ per rank by design


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(out_dir, *args):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               *tiny_train(out_dir, *args)]
    before = f"{out_dir}.before"
    if os.path.isdir(out_dir):
        shutil.copytree(out_dir, before)
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=HERE)
    if result.returncode and "SIGABRT" in result.stderr:
        # Once in this project's full-suite runs a gloo rank aborted (SIGABRT); it never reproduced
        # alone or under load. Rerun once from the same folder: a failure of our code fails again.
        print(result.stderr[-3000:], file=sys.stderr)
        shutil.rmtree(out_dir, ignore_errors=True)
        if os.path.isdir(before):
            shutil.copytree(before, out_dir)
        result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=HERE)
    return result


def start_ranks(out_dir, *args, env_of_rank=(None, None)):
    """The two processes torchrun would start, started by hand so each one's exit code and output can be checked."""
    common = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen([sys.executable, "-u", *tiny_train(out_dir, *args)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE,
                             env={**common, "RANK": str(rank), "LOCAL_RANK": str(rank), **(env or {})})
            for rank, env in enumerate(env_of_rank)]


def step_rows(folder):
    rows = [r.split(",") for r in (folder / "metrics.csv").read_text().splitlines()[1:]]
    return {int(r[2]): float(r[3]) for r in rows if r[0] == "step"}


@pytest.fixture(scope="module")
def two_rank_epoch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    result = torchrun(folder, "--epochs=1", *EXACT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "batch 2 x 2 rank(s) = 4 pairs per step" in result.stdout
    assert result.stdout.count("\nstep 1/") == 1, "only rank 0 prints"
    return folder


def test_two_ranks_match_one_process_on_the_same_global_batch_and_resume_on_one(tmp_path, two_rank_epoch):
    assert [os.path.basename(p) for p in checkpointing.files(two_rank_epoch)] == ["epoch_1_step_5.pth"]
    single = tmp_path / "single"
    assert run_train(single, "--epochs=1", "--batch_size=4", *EXACT).returncode == 0
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

    resumed = tmp_path / "resumed"
    shutil.copytree(two_rank_epoch, resumed)
    result = run_train(resumed, "--epochs=2", "--resume=auto", *EXACT)
    assert result.returncode == 0, result.stderr
    assert "comes from 2 rank(s), this run has 1" in result.stdout and "step 15/15" in result.stdout


def test_two_ranks_resume_on_two_bit_identically_with_their_own_dropout_streams(tmp_path):
    for folder, epochs in (("straight", 2), ("split", 1)):
        result = torchrun(tmp_path / folder, f"--epochs={epochs}")
        assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-3000:]
    result = torchrun(tmp_path / "split", "--epochs=2", "--resume=auto")
    assert result.returncode == 0 and "resumed from" in result.stdout, result.stderr[-3000:]
    assert same_training_state(newest(tmp_path / "straight"), newest(tmp_path / "split"))


def test_a_nan_on_one_rank_stops_both_with_the_abort_code_and_keeps_checkpoints(tmp_path, two_rank_epoch):
    shutil.copytree(two_rank_epoch, tmp_path, dirs_exist_ok=True)
    before = {p: sha1(p) for p in checkpointing.files(tmp_path)}
    ranks = start_ranks(tmp_path, "--epochs=2", "--resume=auto", *EXACT, env_of_rank=(None, {train.TEST_NAN_STEP: "7"}))
    outputs = [rank.communicate(timeout=60) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [training.NAN_ABORT_EXIT] * 2, outputs
    for rank, (_, err) in enumerate(outputs):
        assert f"rank {rank} of 2: NaN abort at step 7" in err
    assert "non-finite gradients (1): stage2.blocks.0.linear2.weight" in outputs[1][1]
    assert {p: sha1(p) for p in checkpointing.files(tmp_path)} == before


def test_a_signal_to_one_rank_stops_both_with_a_checkpoint_that_resumes_on_one(tmp_path):
    ranks = start_ranks(tmp_path, "--epochs=50")
    wait_for_line(ranks[0], "step 8/")  # mid epoch 2
    ranks[1].send_signal(15)
    outputs = [rank.communicate(timeout=60) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [128 + 15] * 2, outputs
    interrupted = newest(tmp_path)
    assert os.path.basename(interrupted).startswith("interrupted_epoch_2_")
    result = run_train(tmp_path, "--epochs=2", "--resume=auto")
    assert result.returncode == 0 and f"resumed from {interrupted}" in result.stdout, result.stderr
    assert os.path.basename(newest(tmp_path)).startswith("epoch_2_")


def test_two_ranks_on_a_folder_warn_once_and_share_one_cache(tmp_path):
    write_collection(tmp_path / "music")
    result = torchrun(tmp_path / "ck", f"--data_dir={tmp_path / 'music'}", f"--cache_dir={tmp_path / 'cache'}", "--epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("warning: skipping") == 3 and "step 1/" in result.stdout
    cached = os.listdir(tmp_path / "cache")  # six good files and the short one, decoded before its length is known
    assert len(cached) == 7 and all(name.endswith(".f32") for name in cached) and checkpointing.files(tmp_path / "ck")


def test_compile_trains_the_same_function_and_saves_a_plain_checkpoint(tmp_path):
    assert run_train(tmp_path / "eager", "--epochs=1", *EXACT).returncode == 0
    result = run_train(tmp_path / "compiled", "--epochs=1", "--compile=True", *EXACT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "compile=True: the first step compiles" in result.stdout
    eager, compiled = step_rows(tmp_path / "eager"), step_rows(tmp_path / "compiled")
    assert sorted(eager) == sorted(compiled) and len(eager) > 1
    for step in eager:
        assert compiled[step] == pytest.approx(eager[step], rel=1e-4), step
    checkpointing.model_from(checkpointing.load(newest(tmp_path / "compiled")))


# -----------------------------------------------------------------------------
# bench.py's reference and FLOP count


def test_our_blocks_compute_the_same_function_as_nn_transformer_encoder():
    import bench
    config = tiny_config(n_layer=2, frame_dim=32, n_head=4)
    ours = Cascade(config).eval()
    reference = bench.ReferenceCascade(config).load_from(ours).eval()
    x, y = noise_frames([0.2, 1e-3], D=32, T=40, seed=14), noise_frames([0.1, 3.0], D=32, T=40, seed=15)
    with torch.no_grad():
        torch.testing.assert_close(reference(x, y)[0], ours(x, y)[0], rtol=1e-5, atol=1e-5 * 3.0)


def test_the_analytic_flop_count_matches_torch_for_the_matrix_products():
    from torch.utils.flop_counter import FlopCounterMode
    import bench
    config = tiny_config(n_layer=2)
    model = Cascade(config)
    x = torch.randn(2, 16, 50)  # 50 frames: attention as matrix products, which torch counts
    with FlopCounterMode(display=False) as counter:
        model(x, x)[0].sum().backward()
    # torch counts backward as 2x forward for matmuls, except the input gradient of the first layer
    # it cannot skip; we count 3x forward throughout
    assert counter.get_total_flops() <= bench.step_flops(config, 2, 50)
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            model(x, x)
    assert 3 * counter.get_total_flops() == bench.step_flops(config, 2, 50)


# -----------------------------------------------------------------------------
# layout


def test_no_script_imports_another_script():
    """Scripts (files that run as __main__) share code through modules only."""
    import ast
    import glob
    files = {os.path.basename(p)[:-3]: p for p in glob.glob(os.path.join(HERE, "*.py")) if not p.endswith("test_model.py")}
    scripts = {name for name, path in files.items() if '__name__ == "__main__"' in open(path).read()}
    assert {"train", "generate", "evaluate", "experiments", "bench", "stability", "plot"} <= scripts
    for name in files:
        tree = ast.parse(open(files[name]).read())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & (scripts - {name}), f"{name}.py imports the script(s) {imported & scripts}"


def test_bench_and_stability_run_what_train_py_runs():
    import bench
    import stability
    defaults = train.HYPERPARAMETERS
    assert training.model_config(defaults) == CascadeConfig()
    assert {k: defaults[k] for k in bench.STEP} == bench.STEP
    shared = ("sample_rate", "seed", "weight_decay", "grad_clip", "rms_floor", "frame_dim", "n_head")
    assert {k: stability.SEED[k] for k in shared} == {k: defaults[k] for k in shared}


# -----------------------------------------------------------------------------
# experiments.py


def test_experiments_thresholds_prints_every_reference_and_rejects_unknown_variants(capsys):
    result = in_process("experiments", ["--thresholds", "--pairs=4"], capsys)
    assert result.returncode == 0, result.stderr
    verdicts = {line[:32].strip(): line.rsplit("  ", 1)[-1] for line in result.stdout.splitlines() if line.endswith("unrelated")}
    assert verdicts["copy of input"] == verdicts["50/50 mix"] == "0 blend, 4 copy, 0 hiss, 0 unrelated"
    assert verdicts["white noise"] == verdicts["noise, target spectrum+envelope"] == "0 blend, 0 copy, 4 hiss, 0 unrelated"
    assert {"random runs", "Let it Bee", "another file"} <= set(verdicts)
    result = in_process("experiments", ["--variants=ours,bogus"], capsys)
    assert result.returncode != 0 and "unknown variants bogus" in result.stderr


# -----------------------------------------------------------------------------
# stability.py


def stability_runs(monkeypatch, condition, measures, steps=3):
    """stability.run on a tiny seed network, with the odd clip in every 2nd batch. # {design: [result]}"""
    import csv
    import io

    import stability
    monkeypatch.setattr(stability, "ODD_EVERY", 2)
    hp = {**stability.SEED, "frame_dim": 16, "n_head": 2}
    batches = [(noise_frames([0.3, 0.5], seed=2 * i), noise_frames([0.4, 0.2], seed=2 * i + 1)) for i in range(steps)]
    writer = csv.writer(io.StringIO())
    return {design: [stability.run(design, measure, condition, batches, hp, steps, writer) for measure in measures]
            for design in stability.DESIGNS}


def test_stability_a_silent_clip_under_an_unfloored_correlation_is_nan_in_both_designs(monkeypatch):
    import stability
    measures = [None, "floored correlation", "clipping", "NaN abort"]
    runs = stability_runs(monkeypatch, "silent_clip", measures)
    for design, (bare, floored, clipped, aborted) in runs.items():
        assert bare["first_nonfinite"] == 2 and bare["bad_gradients"] == bare["n_gradients"], design
        assert bare["weights"] == clipped["weights"] == "non-finite", design  # clipping a NaN gradient keeps it NaN
        assert math.isnan(bare["terms"]["novelty"]) and math.isfinite(bare["terms"]["recon"]), design
        assert floored["first_nonfinite"] is None and len(floored["norms"]) == 3, design
        assert aborted["first_nonfinite"] == 2 and aborted["weights"] == "intact", design
        assert stability.prevented_by(runs[design], design) == "floored correlation, NaN abort (stops, weights intact)"
    assert "NaN at step 2" in stability.summary({"silent_clip": runs["learnable"] + runs["fixed"]})[1]


def test_stability_a_near_silent_target_gives_the_seeds_scalar_signature_and_fixed_scaling_removes_it(monkeypatch):
    import stability
    runs = stability_runs(monkeypatch, "near_silent", [None], steps=2)
    learnable, fixed = runs["learnable"][0], runs["fixed"][0]
    assert learnable["first_nonfinite"] is None and fixed["first_nonfinite"] is None
    assert stability.scalars_signature(learnable["peak"][2]), learnable["peak"]
    assert min(learnable["ratios"]) > 1e4  # the seed's 100-10,000x, and more
    assert max(fixed["norms"]) < 1e-3 * max(learnable["norms"])
    assert not stability.scalars_signature([("stage2.proj.weight", 3.0), ("rms_scale_logs.1", 2.9), ("rms_input_weights.1", 2.9)])


def test_stability_quick_mode_prints_every_condition_and_claim(tmp_path, capsys):
    import stability
    result = in_process("stability", ["--steps=2", f"--out_dir={tmp_path}"], capsys)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith("== ") for line in lines) == len(stability.QUICK)
    assert [line.split()[0] for line in lines if line.split()[:1] and line.split()[0] in stability.QUICK] == list(stability.QUICK)
    assert sum(line.startswith(("holds ", "does not hold ")) for line in lines) == 6
    with open(tmp_path / "stability_records.csv") as f:
        assert len(f.read().splitlines()) == 1 + 2 * 2 * len(stability.QUICK)
    for bad, message in (("--steps=many", "--steps='many'"), ("--conditions=latent,loud", "unknown conditions loud")):
        result = in_process("stability", [bad], capsys)
        assert result.returncode != 0 and message in result.stderr, result.stderr


def test_stability_prefix_scalars_get_gradients():
    import stability
    model = stability.PreFix(tiny_config(head="linear", frame_norm=True))
    x, y = noise_frames([0.3, 1e-6], seed=16), noise_frames([0.2, 0.4], seed=17)
    out, _ = model(x, y)
    loss, _ = stability.seed_objective(out, x, y, {**stability.SEED, "frame_dim": 16}, FLOOR)
    loss.backward()
    scalars = {n: p for n, p in model.named_parameters() if n.startswith(stability.SCALAR_NAMES)}
    assert sorted(scalars) == sorted(f"{name}.{stage}" for name in stability.SCALAR_NAMES for stage in (0, 1))
    for name, p in scalars.items():
        assert p.dim() == 0 and p.grad is not None and p.grad.abs().item() > 0, name
    for design in (stability.PreFix, Cascade):  # the name the spike claim looks for is a real parameter
        assert any(name.endswith(stability.FIRST_ATTENTION_INPUT) for name, _ in design(tiny_config()).named_parameters())


if __name__ == "__main__":

    class ClosingLine:
        def pytest_terminal_summary(self, terminalreporter):
            stats = terminalreporter.stats
            self.counts = [len(stats.get(k, [])) for k in ("passed", "failed", "error", "skipped")]

    closing = ClosingLine()
    code = pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]], plugins=[closing])
    passed, failed, errors, skipped = getattr(closing, "counts", [0, 0, 0, 0])
    print(f"{passed} passed, {failed + errors} failed, {skipped} skipped")
    sys.exit(code)
