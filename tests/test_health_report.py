"""cascade_rms/health_report.py: the report's bars and what it flags."""

from helpers import demo_validation_pairs
from cascade_rms import baselines, health_report, verdict


def test_envelope_bars_use_one_absolute_scale_and_gaps_are_structure():
    import numpy as np
    t = np.arange(48_000) / 48_000
    loud = 0.9 * np.sin(2 * np.pi * 440 * t)
    assert set(health_report.envelope_bars(verdict.envelope_db(loud, 1000))) == {"█"}
    assert set(health_report.envelope_bars(verdict.envelope_db(loud * 1e-4, 1000))) == {" "}
    assert verdict.envelope_spread(loud * (t > 0.5), 48_000) > 10 * max(verdict.envelope_spread(loud, 48_000), 0.1)
    assert verdict.range_ratio(0.5, 1.0, 2.0) == 0.5 and verdict.range_ratio(1.5, 1.0, 2.0) == 1.0 and verdict.range_ratio(4.0, 2.0, 1.0) == 2.0


def test_the_health_report_flags_a_moving_noise_not_only_a_flat_one():
    """Noise with the target's spectrum and loudness envelope passes the envelope check,
    so the blend verdict must catch it."""
    import numpy as np
    rng = np.random.default_rng(1)
    pairs = demo_validation_pairs(3)
    judged = []
    for x_in, x_tgt, other in pairs:
        moving = baselines.references(x_in, x_tgt, other, 16000, rng)["noise, target spectrum+envelope"]
        judged.append(verdict.blend_metrics(moving, x_in, x_tgt, 16000))
    h = {"scale1": 1.0, "scale2": 1.0, "rms_ratio": 1.0, "corr_in": 0.0, "corr_tgt": 0.0,
         **health_report.judged_health(judged, (pairs[0][0], pairs[0][1], moving))}
    lines, warnings = health_report.health_lines(h)
    assert "constant_output" not in warnings and warnings == ["not_a_blend"], lines
    assert any("hiss:" in line for line in lines)


def test_an_epoch_whose_gradients_vanish_warns_that_nothing_is_learning():
    """The default run before stage 1 transcribed ended at gradient norms of 2.7e-10 with a ✅."""
    import numpy as np
    pairs = demo_validation_pairs(1)
    judged = [verdict.blend_metrics(pairs[0][0] + pairs[0][1], pairs[0][0], pairs[0][1], 16000)]
    h = {"scale1": 1.0, "scale2": 1.0, "rms_ratio": 1.0, "corr_in": 0.0, "corr_tgt": 0.0,
         **health_report.judged_health(judged, (pairs[0][0], pairs[0][1], pairs[0][0]))}
    lines, warnings = health_report.health_lines(h, [2.7e-10, 1e-12])
    assert "nothing_learns" in warnings and any("⚠ nothing is learning" in line for line in lines), lines
    lines, warnings = health_report.health_lines(h, list(np.full(5, 0.3)))
    assert "nothing_learns" not in warnings and not any("nothing is learning" in line for line in lines)
    lines, warnings = health_report.health_lines({**h, "note_f1": 0.2}, [0.3])
    assert "note_f1" in warnings and any("frame F1 0.200" in line for line in lines)
