"""
A checkpoint's transcription trained on: held-out and organ F1 after more steps, with other EQ
(docs/LOG.md, issue 35).

    python -m lab.transcribe_more checkpoints/epoch_6_step_1034.pth --steps=250 --bell_db=3
    python -m lab.transcribe_more checkpoints/epoch_6_step_1034.pth --organs=20   # each training organ drawn 20x as often
    python -m lab.transcribe_more checkpoints/epoch_6_step_1034.pth --fresh --steps=600 --batch=8 --lr=2e-3
                                   # its model and data from initial weights: how a batch size or step count pays
"""

import argparse
import math
import sys

import numpy as np
import torch

from cascade_rms import checkpointing, hyperparameters, notes, objective, scores
from lab import load_checkpoint
from model import CascadeConfig, MDCTCodec

ORGANS = [16, 17, 18]  # TimGM6mb's training organs: like the held-out 19, they sound a 16-foot stop an octave low


def transcribe_more(path, steps, tilt_db, bell_db, organs=1, lr=1e-3, batch=16, fresh=False):
    """A checkpoint's stage 1 trained on for `steps` more transcription steps (train.py's excerpts,
    `batch` a step, with this EQ, each training organ drawn `organs` times as often as another
    program; lr decaying along a half cosine), then its frame F1 on the held-out pieces for the
    held-out programs and the training organs: does more of the same, or more organs, teach the
    organs' octave? fresh: from the run's initial weights instead of the checkpoint's."""
    state = load_checkpoint(path)
    hp = state["hyperparameters"]
    model = (checkpointing.initial_model(CascadeConfig(**checkpointing.stored_config(state)), hp["seed"]) if fresh
             else checkpointing.model_from(state))
    train, held_out = scores.triplet_sets(hyperparameters.section(scores.ScoresConfig, hp), log=lambda *_: None)
    augment = notes.Augment(gain_db=hp["augment_gain_db"], tilt_db=tilt_db, bell_db=bell_db)
    programs = train.programs + [p for p in train.programs if p in ORGANS] * (organs - 1)
    clips = notes.NoteClips(train.renderer, train.scores, programs, train.segment, hp["frame_dim"], augment)
    codec = MDCTCodec(hp["frame_dim"])
    optimizer = torch.optim.AdamW([p for n, p in model.named_parameters() if n.startswith("stage1.")], lr=lr,
                                  weight_decay=hp["weight_decay"])
    model.train()
    for i in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * i / steps))
        x_in, x_tgt, rolls = clips.batch(batch, np.random.default_rng([hp["seed"], 99, i]))
        loss = objective.notes_loss(model.transcribe(codec.encode(x_in), codec.encode(x_tgt)), rolls)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        optimizer.step()
    model.eval()
    counts = notes.transcription_counts(model, codec, held_out.renderer, held_out.scores, held_out.programs + ORGANS,
                                        held_out.segment)
    pooled = notes.f1(sum(counts[p] for p in held_out.programs))
    print(f"{path}{' (initial weights)' if fresh else ''} + {steps} steps of {batch}, lr {lr:.0e} (tilt {tilt_db} dB, bells {bell_db} dB, organs {organs}x): held-out pooled F1 {pooled:.3f}; "
          + ", ".join(f"{p}: {notes.f1(c):.3f}" for p, c in counts.items()))


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m lab.transcribe_more", description=__doc__.strip().splitlines()[0])
    parser.add_argument("ckpt", help="a checkpoint trained on scores")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--tilt_db", type=float, default=hyperparameters.defaults()["augment_tilt_db"], help="the EQ's tilt")
    parser.add_argument("--bell_db", type=float, default=hyperparameters.defaults()["augment_bell_db"], help="the EQ's bells")
    parser.add_argument("--organs", type=int, default=1, help="draw each training organ (16-18) this many times as often")
    parser.add_argument("--batch", type=int, default=16, help="excerpts a step")
    parser.add_argument("--lr", type=float, default=1e-3, help="at the first step, decaying along a half cosine to 0")
    parser.add_argument("--fresh", action="store_true", help="train from the run's initial weights, not the checkpoint's")
    args = parser.parse_args(argv)
    if args.organs < 1 or args.batch < 1 or not args.lr > 0:
        parser.error(f"--organs={args.organs} and --batch={args.batch} must be at least 1, --lr={args.lr} > 0")
    transcribe_more(args.ckpt, args.steps, args.tilt_db, args.bell_db, args.organs, args.lr, args.batch, args.fresh)


if __name__ == "__main__":
    main(sys.argv[1:])
