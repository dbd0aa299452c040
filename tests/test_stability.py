"""lab/stability.py: the NaN's causes, condition by condition."""

import math

from helpers import FLOOR, in_process, noise_frames, tiny_config
from model import Cascade


def stability_runs(monkeypatch, condition, measures, steps=3):
    """stability.train_condition on a tiny original network, with the odd clip in every 2nd batch. # {design: [result]}"""
    import csv
    import io

    from lab import stability
    monkeypatch.setattr(stability, "ODD_EVERY", 2)
    hp = {**stability.ORIGINAL, "frame_dim": 16, "n_head": 2}
    batches = [(noise_frames([0.3, 0.5], seed=2 * i), noise_frames([0.4, 0.2], seed=2 * i + 1)) for i in range(steps)]
    writer = csv.writer(io.StringIO())
    return {design: [stability.train_condition(design, measure, condition, batches, hp, steps, writer) for measure in measures]
            for design in stability.DESIGNS}


def test_stability_a_silent_clip_under_an_unfloored_correlation_is_nan_in_both_designs(monkeypatch):
    from lab import stability
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
    from lab import stability
    runs = stability_runs(monkeypatch, "near_silent", [None], steps=2)
    learnable, fixed = runs["learnable"][0], runs["fixed"][0]
    assert learnable["first_nonfinite"] is None and fixed["first_nonfinite"] is None
    assert stability.scalars_signature(learnable["peak"][2]), learnable["peak"]
    assert min(learnable["ratios"]) > 1e4  # the original design's 100-10,000x, and more
    assert max(fixed["norms"]) < 1e-3 * max(learnable["norms"])
    assert not stability.scalars_signature([("stage2.proj.weight", 3.0), ("rms_scale_logs.1", 2.9), ("rms_input_weights.1", 2.9)])


def test_stability_quick_mode_prints_every_condition_and_claim(tmp_path, capsys):
    from lab import stability
    result = in_process("lab.stability", ["--steps=2", f"--out_dir={tmp_path}"], capsys)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith("== ") for line in lines) == len(stability.QUICK)
    assert [line.split()[0] for line in lines if line.split()[:1] and line.split()[0] in stability.QUICK] == list(stability.QUICK)
    assert sum(line.startswith(("holds ", "does not hold ")) for line in lines) == 6
    with open(tmp_path / "stability_records.csv") as f:
        assert len(f.read().splitlines()) == 1 + 2 * 2 * len(stability.QUICK)
    for bad, message in (("--steps=many", "--steps='many'"), ("--conditions=latent,loud", "unknown conditions loud")):
        result = in_process("lab.stability", [bad], capsys)
        assert result.returncode != 0 and message in result.stderr, result.stderr


def test_stability_prefix_scalars_get_gradients():
    from lab import stability
    model = stability.PreFix(tiny_config(head="linear", frame_norm=True))
    x, y = noise_frames([0.3, 1e-6], seed=16), noise_frames([0.2, 0.4], seed=17)
    out, _ = model(x, y)
    loss, _ = stability.original_objective(out, x, y, {**stability.ORIGINAL, "frame_dim": 16}, FLOOR)
    loss.backward()
    scalars = {n: p for n, p in model.named_parameters() if n.startswith(stability.SCALAR_NAMES)}
    assert sorted(scalars) == sorted(f"{name}.{stage}" for name in stability.SCALAR_NAMES for stage in (0, 1))
    for name, p in scalars.items():
        assert p.dim() == 0 and p.grad is not None and p.grad.abs().item() > 0, name
    for design in (stability.PreFix, Cascade):  # the name the spike claim looks for is a real parameter
        assert any(name.endswith(stability.FIRST_ATTENTION_INPUT) for name, _ in design(tiny_config()).named_parameters())
