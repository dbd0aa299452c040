"""model.py: the cascade, fixed RMS scaling, the pointer head and the codec."""

import math
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import FLOOR, loss_weights, music_like, noise_frames, tiny_config
from cascade_rms import baselines, data, objective
from model import Cascade, CascadeConfig, MDCTCodec, PointerHead, combined_rms, rms


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
        assert owner in (nn.Linear, nn.LayerNorm, nn.Conv1d), f"{name} belongs to {owner.__name__}"
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
    model = Cascade(tiny_config(estimate=True))  # every path: stage 2's estimate too
    zeros = torch.zeros(16, 24)
    x = noise_frames([1.0, 1e-9, 1e3, 1.0, 1e-12], seed=7)
    y = noise_frames([1.0, 1e-9, 1e-7, 1e3, 1.0], seed=8)
    x[0], y[0], x[3] = zeros, zeros, zeros  # a silent pair, and a silent input beside a loud target
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out, stats = model(x, y)
    loss = (out.pow(2).mean() + stats["out1"].sum() + stats["scale1"].sum() + stats["scale2"].sum() + stats["notes"].sum()
            + stats["estimate"].sum())
    loss.backward()
    assert out.dtype == torch.float32 and torch.isfinite(out).all() and torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    assert out[0].abs().max() < 1e-9, "a silent pair must give silence"


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
    """Training sees soft choices, eval plays one grain per chunk: the gradient through the
    soft choice must still improve the hard output's objective on the batch it trains on.
    Were the choice cut off from the gradient, nothing would train."""
    weights, config = loss_weights(), pointer_config(sample_rate=8000)
    codec = MDCTCodec(16)
    batch = data.PairDataset(data.demo_tracks(2, 3.0, 8000, 0), 4000).batch([0, 3])
    x, y = codec.encode(batch.inputs), codec.encode(batch.targets)

    def eval_loss(model):
        model.eval()
        with torch.no_grad():
            loss = objective.objective(model(x, y)[0], x, y, codec, weights, config)[0].item()
        model.train()
        return loss

    ratios = []
    for seed in range(3):  # one initialisation's 60 steps improve it by 4-12%
        torch.manual_seed(seed)
        model = Cascade(pointer_config(chunk_frames=8, min_shift_frames=32))
        before = eval_loss(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(60):
            loss, _ = objective.objective(model(x, y)[0], x, y, codec, weights, config)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        ratios.append(eval_loss(model) / before)
    assert sum(ratios) / len(ratios) < 0.97, ratios


def test_the_pointer_plays_whole_grains_from_at_least_min_shift_away():
    """In eval mode every chunk of the head's output is one source's audio, moved by whole
    frames of at least min_shift_frames: correlation 1 with that source at that lag."""
    torch.manual_seed(0)
    config = pointer_config()
    model = Cascade(config).eval()
    x, y = noise_frames([1.0], T=48, seed=3), noise_frames([1.0], T=48, seed=4)
    head, D, R = model.stage1.pointer, config.frame_dim, config.chunk_frames
    with torch.no_grad():
        weights, grains = head.choose(torch.randn(1, 48, 2 * D), [x, y])
        out = head.player(weights, grains, [x, y])
    assert grains.shape == weights.shape == (1, 12, 1) and torch.equal(weights, torch.ones(1, 12, 1))
    audio = [head.codec.decode(s)[0] for s in (x, y)]
    out_audio = head.codec.decode(out)[0]
    for chunk, index in enumerate(grains[0, :, 0].tolist()):
        source, start = divmod(index, 48)
        assert abs(start - chunk * R) >= config.min_shift_frames
        # inside the chunk, away from the crossfades, the output is the source's audio moved by whole frames
        n0, n1 = chunk * R * D + D, min((chunk + 1) * R * D - D, len(out_audio))
        if n1 > n0:
            shift = (chunk * R - start) * D
            torch.testing.assert_close(out_audio[n0:n1], audio[source][n0 - shift:n1 - shift], rtol=0, atol=1e-5)


def test_training_mixes_the_best_candidates_by_their_softmax_weight():
    """In training each chunk mixes pointer_candidates grains, the best first, weighted by a softmax
    over all grains: their weights sum to at most 1 and decrease."""
    model = Cascade(pointer_config(pointer_candidates=5)).train()
    x, y = noise_frames([1.0], T=48, seed=3), noise_frames([1.0], T=48, seed=4)
    weights, grains = model.stage1.pointer.choose(torch.randn(1, 48, 32), [x, y])
    assert grains.shape == (1, 12, 5) and (weights.sum(dim=-1) <= 1 + 1e-6).all() and (weights.diff(dim=-1) <= 0).all()
    assert (weights[..., 1:] > 0).any()  # a mix, not the best grain alone


def test_straight_through_plays_what_eval_plays_and_its_gradient_reaches_every_choice_layer():
    """Straight through, the forward pass in training plays the best grain, exactly what eval
    plays, while the softmax over the candidates carries the gradient to seek, prefer and carry."""
    torch.manual_seed(0)
    model = Cascade(pointer_config(pointer_candidates=5, pointer_straight_through=True, pointer_seek=True))
    x, y = noise_frames([1.0], T=48, seed=3), noise_frames([1.0], T=48, seed=4)
    for p in model.parameters():  # away from the zero init, so every layer moves the choice
        torch.nn.init.normal_(p, std=0.05)
    weights, grains = model.stage1.pointer.train().choose(torch.randn(1, 48, 32), [x, y])
    assert grains.shape == (1, 12, 5)
    torch.testing.assert_close(weights.detach(), F.one_hot(torch.zeros(1, 12).long(), 5).float(), rtol=0, atol=1e-6)
    out, _ = model.train()(x, y)
    out.pow(3).sum().backward()
    with torch.no_grad():
        torch.testing.assert_close(out, model.eval()(x, y)[0], rtol=0, atol=1e-6)
    for name in ("seek", "prefer", "carry"):
        for stage in (model.stage1, model.stage2):
            assert getattr(stage.pointer, name).weight.grad.abs().sum() > 0, name


def steady_tone(seconds=1.0, hz=250.0, sample_rate=16000):
    """A sine whose period divides the 128-sample hop: every grain of it starts in phase, so
    any choice of grains rebuilds it exactly, and a join can only show as a level change."""
    return (0.3 * torch.sin(2 * math.pi * hz * torch.arange(int(seconds * sample_rate)) / sample_rate)).numpy()


def short_time_level_db(audio, window=64):
    frames = audio[: len(audio) // window * window].reshape(-1, window)
    return 10 * np.log10((frames**2).mean(axis=1) + 1e-20)


def test_every_join_keeps_a_steady_tone_at_its_level():
    """Crossfades sum to one: a steady tone played grain by grain, at random grains or at the
    head's own choices, keeps its level across every join within 0.05 dB. The halves of a
    join that did not sum to one would bump it by up to 3 dB every 128 ms."""
    tone = steady_tone()
    config = CascadeConfig()
    made = [baselines.random_grains(tone, tone, config, np.random.default_rng(seed)) for seed in range(3)]
    head = PointerHead(2 * config.frame_dim, 2, config).eval()
    sources = [head.codec.encode(torch.from_numpy(tone)[None])] * 2
    with torch.no_grad():
        frames, *_ = head(torch.randn(1, sources[0].shape[2], 2 * config.frame_dim), sources)
        made.append(head.codec.decode(frames, len(tone))[0].numpy())
    inside = slice(4, -4)  # the clip's own ends fade in and out
    for audio in made:
        level = short_time_level_db(audio)[inside]
        assert np.abs(level - short_time_level_db(tone)[inside]).max() < 0.05, np.abs(level - level.mean()).max()


def test_continuity_carries_runs_on_and_the_corpus_is_the_target():
    """With the target as the corpus no grain comes from the input; the continuity prior makes
    most chunks carry on the previous chunk's grain, where without it few do."""
    torch.manual_seed(0)
    x, y = noise_frames([1.0], T=96, seed=3), noise_frames([1.0], T=96, seed=4)
    carried = {}
    for continuity in (0.0, 4.0):
        head = Cascade(pointer_config(pointer_continuity=continuity)).eval().stage1.pointer
        with torch.no_grad():
            _, grains = head.choose(torch.randn(1, 96, 32), [x, y])
        grains = grains[0, :, 0]
        assert (grains // 96 == 1).all(), "a grain from the input"
        carried[continuity] = (grains.diff() == head.chunk_frames).float().mean().item()
    assert carried[4.0] >= 0.75 and carried[0.0] <= 0.25, carried


def test_fine_levels_seek_the_input_until_trained_and_a_described_target_is_chosen_from_as_the_clips_own():
    """With pointer_fine, an untrained head seeks the input's own fine levels; a corpus that
    PointerHead.describe made of the clip's target (the copy guard at its start) is chosen from
    grain for grain as the clip's target is; and the truth term trains the prediction."""
    torch.manual_seed(0)
    model = Cascade(CascadeConfig(pointer_fine=4.0)).eval()
    music, target = (data.demo_piece(seed, 2.0, 16000).astype(np.float32) for seed in (5, 6))
    x_in, x_tgt = (model.stage1.pointer.codec.encode(torch.from_numpy(a)[None]) for a in (music, target))
    T = x_in.shape[2]
    corpus = model.stage1.pointer.describe(torch.from_numpy(target)[None])
    with torch.no_grad():
        _, own = model(x_in, x_tgt)
        _, drawn = model(x_in, x_tgt, replace(corpus, clip_frame=torch.tensor([0])))
        level = combined_rms(x_in, x_tgt, FLOOR)
        torch.testing.assert_close(own["sought2"], model.stage2.pointer.fine_levels(x_in / level))
    for stage, n_sources in (("grains1", 2), ("grains2", 3)):
        assert torch.equal(drawn[stage] - n_sources * T, own[stage] - (n_sources - 1) * T), stage
    truth = torch.randn(1, T, 32)  # any fine levels to learn toward
    optimizer = torch.optim.Adam([p for n, p in model.named_parameters() if "predict" in n], lr=1e-2)
    losses = []
    for _ in range(30):
        _, stats = model.train()(x_in, x_tgt)
        loss = objective.truth_loss(stats, truth)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_with_the_target_as_corpus_both_stages_copy_the_target_alone():
    """Stage 1's output is no corpus either: its 1.0x residual is half the aligned input."""
    model = Cascade(pointer_config()).eval()
    for stage in (model.stage1, model.stage2):
        allowed = stage.pointer.allowed(48, "cpu")  # (n_chunks, n_sources * 48)
        assert allowed[:, -48:].any(dim=1).all() and not allowed[:, :-48].any()
    assert Cascade(pointer_config(pointer_corpus="all")).stage2.pointer.allowed(48, "cpu")[:, :96].any()


def test_the_pitch_class_filter_is_librosas_and_the_objective_reads_the_metrics_windows():
    import librosa

    from cascade_rms import quality
    from model import pitch_class_filter
    for rate, n_fft in ((16000, 2048), (8000, 256), (44100, 4096)):
        torch.testing.assert_close(pitch_class_filter(rate, n_fft),
                                   torch.from_numpy(librosa.filters.chroma(sr=rate, n_fft=n_fft, tuning=0.0)), rtol=0, atol=1e-6)
    assert (objective.CHROMA_FFT, objective.CHROMA_HOP) == (quality.CHROMA_FFT, quality.CHROMA_HOP)


def test_the_grain_chroma_names_a_tones_pitch_class_and_the_choice_follows_it():
    """A grain's chroma peaks at its tone's pitch class. Asked for an A, with one band (loudness
    alone) the head cannot tell the target's A from its equally loud E-flat; with the chroma
    distance it plays the A."""
    t = torch.arange(32000) / 16000  # each half long enough to hold grains min_shift away from every chunk

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
            _, grains = head.choose(torch.zeros(1, a.shape[2], 2 * config.frame_dim), [a, target])
        picked_a[chroma] = (grains[0, :, 0] - a.shape[2] + config.chunk_frames // 2 <= half).float().mean().item()
    assert head.grain_chroma(a)[0, 10:-20].argmax(dim=-1).eq(9).all()  # A is pitch class 9 (C = 0)
    assert head.grain_chroma(e_flat)[0, 10:-20].argmax(dim=-1).eq(3).all()
    assert picked_a[1.0] == 1.0 and picked_a[0.0] <= 0.75, picked_a


def test_the_pointer_works_on_clips_too_short_for_min_shift():
    model = Cascade(pointer_config(min_shift_frames=100)).eval()
    x, y = noise_frames([0.5, 0.0], T=10, seed=5), noise_frames([0.2, 0.0], T=10, seed=6)
    out, stats = model(x, y)
    assert torch.isfinite(out).all() and out[1].abs().max() < 1e-9


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


def test_our_blocks_compute_the_same_function_as_nn_transformer_encoder():
    from lab import bench
    config = tiny_config(n_layer=2, frame_dim=32, n_head=4)
    ours = Cascade(config).eval()
    reference = bench.ReferenceCascade(config).load_from(ours).eval()
    x, y = noise_frames([0.2, 1e-3], D=32, T=40, seed=14), noise_frames([0.1, 3.0], D=32, T=40, seed=15)
    with torch.no_grad():
        torch.testing.assert_close(reference(x, y)[0], ours(x, y)[0], rtol=1e-5, atol=1e-5 * 3.0)


def test_a_corpus_is_described_on_the_device_of_its_audio():
    """On CUDA the first validation crashed: PointerHead.describe numbered its grains on the CPU
    (the H200 check of docs/speed.md found it). The meta device stands in for the GPU that CI
    lacks: a tensor made on the CPU beside it fails there as it does on CUDA."""
    for estimate in (False, True):
        model = Cascade(tiny_config(estimate=estimate)).to("meta")
        audio = torch.randn(2, 16 * 200, device="meta")
        for lengths in (None, torch.tensor([16 * 200, 16 * 150], device="meta"), torch.tensor([16 * 200, 16 * 150])):
            corpus = model.describe(audio, lengths)
            described = [corpus.power, corpus.chroma, corpus.allowed] + ([corpus.mel, corpus.spectra] if estimate else [])
            assert all(t.device.type == "meta" for t in described), estimate
