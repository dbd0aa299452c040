"""
The blend verdict's metrics for every reference (copies, mixes, noises, another file) and the
untrained mosaics, over many pairs: the ranges verdict.py's thresholds are read from
(docs/evaluation.md).

    python -m lab.thresholds                                              # the demo music
    python -m lab.thresholds --music_dir=.cache/debian-music/metal/songs  # and recorded music
"""

import argparse
import sys

import numpy as np

from cascade_rms import baselines, data, hyperparameters, verdict


def thresholds(music_dir, n_pairs, seed):
    """The verdict's metrics of every reference, and of the mosaics made from the pair with no
    training, over many pairs of every file (train and validation alike): the ranges
    verdict.py's thresholds are read from."""
    hp = {**hyperparameters.defaults(), "data_dir": music_dir}
    config, source = hyperparameters.cascade_config(hp), hyperparameters.section(data.DataConfig, hp)
    rate, segment = config.sample_rate, data.seconds_to_samples(source.segment_seconds, config.sample_rate)
    tracks = data.run_tracks(source)
    pairs = data.PairDataset(tracks, segment)
    rng = np.random.default_rng(seed)
    rows = {}
    for index in rng.permutation(len(pairs))[:n_pairs]:
        x_in, x_tgt = (a.numpy() for a in pairs[int(index)])
        other = tracks[(pairs.pairs[index][0] + 1 + int(rng.integers(len(tracks) - 1))) % len(tracks)]
        other_audio = other.read(int(rng.integers(other.n_samples - segment + 1)), segment)
        made = {"random grains": baselines.random_grains(x_in, x_tgt, config, rng),
                "Let it Bee": baselines.let_it_bee(x_in, x_tgt, seed=int(index)),
                **baselines.references(x_in, x_tgt, other_audio, rate, rng)}
        for name, audio in made.items():
            rows.setdefault(name, []).append(verdict.blend_metrics(audio, x_in, x_tgt, rate))
    keys = ("max_corr", "envelope", "persistence", "motion", "fill")
    print(f"{len(next(iter(rows.values())))} pairs of {music_dir or 'the demo music'}: min-max of each metric, "
          f"median (10th-90th percentile) of spectrum_span, and the verdicts")
    print(f"{'':<32}" + "".join(f" {k:>13}" for k in (*keys, "structure")) + f" {'spectrum_span':>18}  verdicts")
    for name, measured in rows.items():
        values = np.array([[m[k] for k in keys] + [max(m["persistence"], m["motion"])] for m in measured])
        mid, lo, hi = np.percentile([m["spectrum_span"] for m in measured], [50, 10, 90])
        verdicts = [verdict.verdict(m) for m in measured]
        print(f"{name:<32}" + "".join(f" {lo:>6.2f}-{hi:<6.2f}" for lo, hi in zip(values.min(0), values.max(0)))
              + f" {mid:>6.2f} ({lo:.2f}-{hi:.2f})"
              + "  " + ", ".join(f"{verdicts.count(v)} {v}" for v in verdict.VERDICTS))
    print(f"thresholds: copy at max_corr >= {verdict.COPY_CORRELATION}; hiss at structure "
          f"(max of persistence, motion) < {verdict.LOOSE_STRUCTURE} or envelope < "
          f"{verdict.FLAT_ENVELOPE}; unrelated at spectrum_span > {verdict.UNRELATED_SPAN}")


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m lab.thresholds", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--music_dir", default="", help="recorded music to measure too, after the demo music")
    parser.add_argument("--pairs", type=int, default=200, help="pairs per collection")
    args = parser.parse_args(argv)
    thresholds("", args.pairs, 0)
    if args.music_dir:
        thresholds(args.music_dir, args.pairs, 0)


if __name__ == "__main__":
    main(sys.argv[1:])
