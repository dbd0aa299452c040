"""
The untrained head seeking the ground truth's fine levels: the ceiling of a prediction of them
(docs/LOG.md, issue 31).

    python -m lab.seek_truth
"""

import argparse
import sys

import numpy as np

from lab import runs, seeking
from model import Cascade, CascadeConfig


def seek_truth(fine_weights=(1.0, 4.0, 16.0, 100.0)):
    """The untrained head on the default run's held-out triplets, with pointer_fine at each weight,
    seeking the input's fine levels (what an untrained prediction seeks) or the ground truth's own
    (a perfect prediction): the median log-spectral distance to the truth, with the choice's
    other terms (chroma, continuity) at their defaults and off."""
    _, triplets, rate = runs.default_triplets()
    print(f"{len(triplets)} held-out triplets; median log-spectral distance to the truth (dB)")
    print(f"{'pointer_fine':>12} {'other terms':>12} {'seeks input':>12} {'seeks truth':>12}")
    for weight in fine_weights:
        for others in ({}, {"pointer_chroma": 0.0, "pointer_continuity": 0.0}):
            model = Cascade(CascadeConfig(pointer_fine=weight, **others)).eval()
            distances = {"input": [], "truth": []}
            for triplet in triplets:
                frames, corpus, fine_in, fine_truth, _ = seeking.fine_levels_of(model, triplet)
                for seeks, wanted in (("input", fine_in), ("truth", fine_truth)):
                    distances[seeks].append(seeking.lsd_seeking(model, triplet, frames, corpus, wanted, rate))
            print(f"{weight:>12g} {'off' if others else 'defaults':>12} {np.median(distances['input']):>12.2f} "
                  f"{np.median(distances['truth']):>12.2f}", flush=True)


if __name__ == "__main__":
    argparse.ArgumentParser(prog="python -m lab.seek_truth", description=__doc__.strip().splitlines()[0]).parse_args(sys.argv[1:])
    seek_truth()
