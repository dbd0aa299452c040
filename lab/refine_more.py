"""
Stage 2's refinement trained on from a checkpoint, alone, seeing Let it Bee's output or not, then
its played distance to the truth on held-out triplets against Let it Bee's (docs/LOG.md, issue 36).

    python -m lab.refine_more checkpoints/epoch_6_step_1034.pth --steps=54             # train.py's 54 steps of 8
    python -m lab.refine_more checkpoints/epoch_6_step_1034.pth --steps=54 --sees_bee  # Let it Bee's mel spectrum seen too
    python -m lab.refine_more checkpoints/epoch_6_step_1034.pth --steps=54 --sees_bee --from_bee  # refining Let it Bee's, not the fit
"""

import argparse
import math
import sys

import numpy as np
import torch
import torch.nn as nn

from cascade_rms import baselines, checkpointing, groundtruth, hyperparameters, objective, scores, training
from lab import load_checkpoint
from model import N_KEYS, N_MELS, Cascade, CascadeConfig, MDCTCodec


class BeeSeeing(nn.Module):
    """Stage 2's EstimateHead, its blocks shown Let it Bee's output too (`bee`, its mel spectrum in
    dB at the corpus's unit level, (B, T, N_MELS), set before each forward) through a fresh input
    layer, and with from_bee refining Let it Bee's output instead of the fixed fit."""

    def __init__(self, head, from_bee):
        super().__init__()
        self.head, self.from_bee, self.bee = head, from_bee, None
        self.seen = nn.Sequential(nn.Linear(3 * N_MELS + N_KEYS, head.refine.in_features),
                                  nn.LayerNorm(head.refine.in_features))

    def sees(self, fitted, input_mel, probabilities):
        return self.seen(torch.cat([fitted / 10, input_mel / 10, self.bee / 10, probabilities], dim=-1))

    def forward(self, x, sources, corpus, fitted):
        return self.head(x, sources, corpus, self.bee if self.from_bee else fitted)


def bees(batch, seeds):
    """Let it Bee's output for each triplet of a batch, seeded as evaluate.py seeds it. # -> [(N,)]"""
    return [baselines.let_it_bee(batch.inputs[j].numpy(), batch.materials[j, : int(batch.material_lengths[j])].numpy(),
                                 seed=int(seed)) for j, seed in enumerate(seeds)]


def bee_mel(model, made, corpus):
    """Let it Bee's outputs as the mel spectrum the truth is compared in (training.truth_levels).
    # [(N,)] -> (B, T, N_MELS)"""
    spectra = model.note_spectra
    return spectra.mel_db(spectra.power(torch.from_numpy(np.stack(made)) / corpus.mel_level[:, None]))


def refine_more(path, steps, batch_size=8, lr=2e-3, n_triplets=30, sees_bee=False, from_bee=False, epoch_triplets=432):
    """A checkpoint's stage 2, as an estimator (a checkpoint without one: its refinement at zero),
    trained alone for `steps` steps of `batch_size` training triplets by the estimate term (lr
    decaying along a half cosine; materials described through their scores' notes, as train.py
    does; `epoch_triplets` drawn afresh each epoch), then played on `n_triplets` held-out triplets
    with stage 1's notes: log-spectral distance to the truth against Let it Bee's, and the refined
    estimate's own. sees_bee: its blocks see Let it Bee's output too (BeeSeeing)."""
    torch.manual_seed(0)
    state = load_checkpoint(path)
    model = Cascade(CascadeConfig(**{**checkpointing.stored_config(state), "estimate": True}))
    model.load_state_dict(state["model"], strict=False)  # a checkpoint without an estimator: a fresh one
    if sees_bee:
        model.stage2.estimator = BeeSeeing(model.stage2.estimator, from_bee)
    hp = state["hyperparameters"]
    train, held = scores.triplet_sets(hyperparameters.section(scores.ScoresConfig, {**hp, "epoch_triplets": epoch_triplets}),
                                      log=lambda *_: None)
    steps_per_epoch = len(train) // batch_size
    if steps and not steps_per_epoch:
        raise SystemExit(f"--epoch_triplets={epoch_triplets} draws {len(train)} triplets, fewer than one batch of {batch_size}")
    codec, corpora = MDCTCodec(model.config.frame_dim), {}
    model.requires_grad_(False)
    weights = list(model.stage2.parameters())
    for weight in weights:
        weight.requires_grad_(True)
    optimizer = torch.optim.AdamW(weights, lr=lr, weight_decay=hp["weight_decay"])
    model.train()
    for step in range(steps):
        epoch, i = divmod(step, steps_per_epoch)
        if i == 0:
            train.set_epoch(epoch + 1)
            order = np.random.default_rng(epoch).permutation(len(train))
        indices = [int(j) for j in order[i * batch_size : (i + 1) * batch_size]]
        batch = train.batch(indices)
        x_in, x_tgt, corpus = training.encode(model, codec, batch, "cpu", corpora, batch.material_rolls)
        truth = training.truth_levels(model, codec, batch, x_in, x_tgt, corpus, "cpu")
        if sees_bee:
            model.stage2.estimator.bee = bee_mel(model, bees(batch, indices), corpus)
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        _, stats = model(x_in, x_tgt, corpus)
        loss = objective.estimate_loss(stats["estimate"], truth["mel"])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(weights, hp["grad_clip"])
        optimizer.step()
    model.eval()
    sample = np.sort(np.random.default_rng(0).permutation(len(held))[:n_triplets])
    played, bee, estimated = [], [], []
    rate, hop = held.renderer.sample_rate, model.config.frame_dim
    with torch.no_grad():
        for i in sample:
            batch = held.batch([int(i)])
            truth = held[int(i)][4]
            x, y, corpus = training.encode(model, codec, batch, "cpu", {})
            made = bees(batch, [i])
            if sees_bee:
                model.stage2.estimator.bee = bee_mel(model, made, corpus)
            out, stats = model(x, y, corpus)
            played.append(groundtruth.log_spectral_distance(codec.decode(out, len(truth))[0].numpy(), truth, rate, hop))
            bee.append(groundtruth.log_spectral_distance(made[0], truth, rate, hop))
            truth_mel = training.truth_levels(model, codec, batch, x, y, corpus, "cpu")["mel"]
            estimated.append(objective.estimate_distance(stats["estimate"], truth_mel).mean().item())
    played, bee = np.array(played), np.array(bee)
    seen = "fit, input, notes" + (" and Let it Bee" if sees_bee else "")
    print(f"{path} + {steps} steps of {batch_size}, lr {lr:.0e}, refining {'Let it Bee' if from_bee else 'the fit'}, "
          f"seeing {seen}: on {len(sample)} held-out triplets played LSD {np.median(played):.2f} (Let it Bee "
          f"{np.median(bee):.2f}; paired {np.median(played - bee):+.2f}, nearer in {np.mean(played < bee):.0%}), "
          f"estimate {np.median(estimated):.2f} dB from the truth")


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m lab.refine_more", description=__doc__.strip().splitlines()[0])
    parser.add_argument("ckpt", help="a checkpoint trained on scores")
    parser.add_argument("--steps", type=int, default=54)
    parser.add_argument("--batch", type=int, default=8, help="triplets a step")
    parser.add_argument("--lr", type=float, default=2e-3, help="at the first step, decaying along a half cosine to 0")
    parser.add_argument("--triplets", type=int, default=30, help="held-out triplets played")
    parser.add_argument("--epoch_triplets", type=int, default=432, help="training triplets drawn afresh each epoch")
    parser.add_argument("--sees_bee", action="store_true", help="the blocks see Let it Bee's output too")
    parser.add_argument("--from_bee", action="store_true", help="refine Let it Bee's output, not the fit (needs --sees_bee)")
    args = parser.parse_args(argv)
    if args.steps < 0 or args.batch < 1 or args.triplets < 1 or not args.lr >= 0 or (args.from_bee and not args.sees_bee):
        parser.error(f"--steps={args.steps} must be >= 0, --batch={args.batch} and --triplets={args.triplets} >= 1, "
                     f"--lr={args.lr} >= 0, and --from_bee needs --sees_bee")
    refine_more(args.ckpt, args.steps, args.batch, args.lr, args.triplets, args.sees_bee, args.from_bee,
                args.epoch_triplets)


if __name__ == "__main__":
    main(sys.argv[1:])
