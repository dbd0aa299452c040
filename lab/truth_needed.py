"""
How near the truth's fine levels the head must seek to close half the gap, and what linear
predictions of them give (docs/LOG.md, issue 31).

    python -m lab.truth_needed
"""

import argparse
import sys

import numpy as np
import torch

from lab import runs, seeking
from model import Cascade, CascadeConfig


def chunk_means(levels, R):
    """Each chunk's mean over its R frames. # (1, T, bands) -> (n_chunks, bands)"""
    return torch.stack([chunk.mean(dim=0) for chunk in levels[0].split(R)])


def chunk_design(fine_in, fine_material, R):
    """What a linear prediction of a chunk's move toward the truth may use: the input's chunk
    means and the material's mean minus the input's (the two instruments' average difference). # (n_chunks, 2*bands+1)"""
    means = chunk_means(fine_in, R)
    offset = (fine_material.mean(dim=1) - fine_in.mean(dim=1)).expand(len(means), -1)
    return torch.cat([means, offset, torch.ones(len(means), 1)], dim=1).double()


def fitted_move(model, triplets, R, ridge=1.0):
    """Least squares (ridge) from chunk_design to the truth's chunk means minus the input's, over triplets."""
    rows, moves = [], []
    for triplet in triplets:
        _, _, fine_in, fine_truth, fine_material = seeking.fine_levels_of(model, triplet)
        rows.append(chunk_design(fine_in, fine_material, R))
        moves.append((chunk_means(fine_truth, R) - chunk_means(fine_in, R)).double())
    X, Y = torch.cat(rows), torch.cat(moves)
    return torch.linalg.solve(X.T @ X + ridge * torch.eye(X.shape[1], dtype=X.dtype), X.T @ Y)


def truth_needed(epochs=4, fractions=(0.25, 0.5, 0.75, 0.9)):
    """How much of the ground truth's fine levels the heads must know to close half the gap: the
    untrained head at the setting where seeking the truth goes furthest (pointer_fine 16, chroma
    and continuity off) seeking fine levels between the input's and the truth's, and predictions of
    them a model could make, linear in each chunk's input levels and the instruments' average
    difference, fitted on `epochs` draws of the training triplets, or on the held-out ones
    themselves (the best any such map could do)."""
    train, held_out, rate = runs.default_triplets()
    model = Cascade(CascadeConfig(pointer_fine=16.0, pointer_chroma=0.0, pointer_continuity=0.0)).eval()
    R = model.config.chunk_frames
    training = []
    for epoch in range(epochs):
        train.set_epoch(epoch)
        training += [train[i] for i in range(len(train))]
    maps = {"training": fitted_move(model, training, R), "held-out": fitted_move(model, held_out, R)}

    def frame_by_frame(chunks, T):  # (n_chunks, bands) -> (1, T, bands)
        return chunks.repeat_interleave(R, dim=0)[None, :T]

    def predicted(fine_in, fine_material, which):
        move = (chunk_design(fine_in, fine_material, R) @ maps[which]).float()
        return fine_in + frame_by_frame(move, fine_in.shape[1])

    # what both heads seek, from the fine levels of input i, truth t and material m
    rows = {"the input's (what an untrained prediction seeks)": lambda i, t, m: i,
            "the input's + the material's mean - the input's": lambda i, t, m: i + m.mean(1, True) - i.mean(1, True),
            "a linear prediction fitted on training triplets": lambda i, t, m: predicted(i, m, "training"),
            "a linear prediction fitted on these triplets": lambda i, t, m: predicted(i, m, "held-out"),
            "the truth's mean over each chunk": lambda i, t, m: frame_by_frame(chunk_means(t, R), t.shape[1])}
    for f in fractions:
        rows[f"the input's, {f:.0%} of the way to the truth's"] = lambda i, t, m, f=f: i + f * (t - i)
    rows["the truth's own"] = lambda i, t, m: t
    distances, errors = {name: [] for name in rows}, {name: [] for name in rows}
    for triplet in held_out:
        frames, corpus, fine_in, fine_truth, fine_material = seeking.fine_levels_of(model, triplet)
        for name, wanted in rows.items():
            sought = wanted(fine_in, fine_truth, fine_material)
            errors[name].append(float((sought - fine_truth).pow(2).mean()))
            distances[name].append(seeking.lsd_seeking(model, triplet, frames, corpus, sought, rate))
    print(f"{len(held_out)} held-out triplets, the untrained head with pointer_fine 16 and chroma and continuity off")
    print(f"{'the fine levels both heads seek':<52} {'error (10 dB)^2':>15} {'median LSD (dB)':>15}")
    for name in rows:
        print(f"{name:<52} {np.mean(errors[name]):>15.2f} {np.median(distances[name]):>15.2f}", flush=True)


if __name__ == "__main__":
    argparse.ArgumentParser(prog="python -m lab.truth_needed", description=__doc__.strip().splitlines()[0]).parse_args(sys.argv[1:])
    truth_needed()
