"""
Paired comparisons: one system against another on the same pairs. Per metric, the
per-pair difference (system minus baseline), its median with a bootstrap 95%
interval, and the share of pairs where the system is better. A difference counts
only when its interval excludes zero.
"""

import csv

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
COLUMNS = ("metric", "baseline", "median", "low", "high", "better_share", "pairs", "outcome")


def paired(system, baseline, higher_is_better, rng, resamples=BOOTSTRAP_RESAMPLES):
    """system and baseline: one value per pair, the same pairs in the same order (NaN: left
    out, as a metric undefined on that pair). Returns the comparison as a dict."""
    difference = np.asarray(system, dtype=float) - np.asarray(baseline, dtype=float)
    difference = difference[np.isfinite(difference)]
    if len(difference) == 0:
        return {"median": float("nan"), "low": float("nan"), "high": float("nan"), "better_share": float("nan"),
                "pairs": 0, "outcome": "undefined"}
    medians = np.median(difference[rng.integers(len(difference), size=(resamples, len(difference)))], axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    sign = 1 if higher_is_better else -1
    improvement = sorted((sign * low, sign * high))  # the interval, as improvement
    outcome = "better" if improvement[0] > 0 else "worse" if improvement[1] < 0 else "no difference"
    return {"median": float(np.median(difference)), "low": float(low), "high": float(high),
            "better_share": float(np.mean(sign * difference > 0)), "pairs": len(difference), "outcome": outcome}


def compare(rows, system, baselines, higher_is_better, seed=0):
    """Every metric of higher_is_better ({metric: bool}) of `system` against each baseline;
    rows: {name: [metrics dict of each pair]}. # -> list of dicts with COLUMNS"""
    rng = np.random.default_rng(seed)
    table = []
    for metric, higher in higher_is_better.items():
        for baseline in baselines:
            values = [[m[metric] for m in rows[name]] for name in (system, baseline)]
            table.append({"metric": metric, "baseline": baseline, **paired(*values, higher, rng)})
    return table


def text(table, system):
    header = (f"{'metric':<13} {'baseline':<22} {'median':>9} {'95% interval':>21} {'better in':>10} {'pairs':>6}  outcome")
    lines = [f"paired: {system} minus each baseline, per pair (median, bootstrap 95% interval of the median, "
             f"share of pairs where {system} is better)", header, "-" * len(header)]
    for row in table:
        lines.append(f"{row['metric']:<13} {row['baseline']:<22} {row['median']:>+9.3f} "
                     f"{'[' + format(row['low'], '+.3f') + ', ' + format(row['high'], '+.3f') + ']':>21} "
                     f"{row['better_share']:>10.0%} {row['pairs']:>6}  {row['outcome']}")
    return "\n".join(lines)


def write_csv(table, path):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)
