"""cascade_rms/comparison.py: paired comparisons find real differences and no false ones."""

def test_paired_comparison_finds_a_real_difference_and_no_false_one():
    import numpy as np

    from cascade_rms import comparison
    rng = np.random.default_rng(0)
    baseline = rng.standard_normal(40)
    better = comparison.paired(baseline + 0.5 + 0.1 * rng.standard_normal(40), baseline, True, rng)
    assert better["outcome"] == "better" and better["low"] > 0 and better["better_share"] == 1.0 and better["pairs"] == 40
    assert comparison.paired(baseline + 0.5, baseline, False, rng)["outcome"] == "worse"  # lower is better there
    noise = comparison.paired(baseline + 0.3 * rng.standard_normal(40), baseline, True, rng)
    assert noise["outcome"] == "no difference" and noise["low"] < 0 < noise["high"]
    with_gaps = comparison.paired(np.r_[baseline[:30] + 1, [np.nan] * 10], baseline, True, rng)
    assert with_gaps["pairs"] == 30 and with_gaps["median"] == 1.0
