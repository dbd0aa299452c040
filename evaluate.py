"""
Is the output a blend? Judge a checkpoint on every validation pair against references
built from the same pair: copies, the mix, a delayed copy, noises, another file.

    python evaluate.py --ckpt checkpoints/epoch_10_step_270.pth
    python evaluate.py --ckpt ... --data_dir=~/music      # other music than the run's own validation files
    python evaluate.py --input a.wav --target b.wav --output out.wav   # e.g. what generate.py wrote

Prints one table: per row (the model's output, then each reference) the share of
pairs judged blend / copy / hiss and the median of every metric (--csv: to a file too).
"""

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F

import baselines
import checkpointing
import data
import verdict
from model import MDCTCodec

METRICS = ("max_corr", "envelope", "persistence", "motion", "fill", "flatness", "dist_in", "dist_tgt", "dist_mix")


def judge(rows):
    """{name: [metrics of each pair]} -> {name: (verdict counts, metric medians)}"""
    summary = {}
    for name, measured in rows.items():
        verdicts = [verdict.verdict(m) for m in measured]
        counts = {v: verdicts.count(v) / len(verdicts) for v in ("blend", "copy", "hiss")}
        summary[name] = counts, {k: float(np.median([m[k] for m in measured])) for k in METRICS}
    return summary


def table(summary, n_pairs):
    header = f"{'':<32} {'blend':>6} {'copy':>6} {'hiss':>6}" + "".join(f" {k:>9}" for k in METRICS)
    lines = [f"{n_pairs} pairs; verdict shares, then medians (texture metrics as range ratios to the sources; "
             f"distances in dB)", header, "-" * len(header)]
    for name, (counts, medians) in summary.items():
        lines.append(f"{name:<32}" + "".join(f" {counts[v]:>6.0%}" for v in ("blend", "copy", "hiss"))
                     + "".join(f" {medians[k]:>9.3f}" for k in METRICS))
    return "\n".join(lines)


@torch.no_grad()
def outputs(model, codec, pairs, batch_size):
    """The model's output for each pair of a PairDataset, and for a pointer head the share of
    the final stage's runs taken from each of its sources. # -> list of (N,) numpy, (3,) or None"""
    result, runs, hook = [], [], None
    if model.config.head == "pointer":  # the choices, as the head makes them
        def count(head, args, out):
            _, picked = head.choose(*args)  # eval: (B, n_chunks, 1), numbered source * T + start
            runs.append(F.one_hot(picked.flatten() // args[0].shape[1], head.n_sources).sum(dim=0))

        hook = model.stage2.pointer.register_forward_hook(count)
    for start in range(0, len(pairs), batch_size):
        x_in, x_tgt = pairs.batch(range(start, min(start + batch_size, len(pairs))))
        out, _ = model(codec.encode(x_in), codec.encode(x_tgt))
        result += list(codec.decode(out, x_in.shape[1]).numpy())
    if hook is None:
        return result, None
    hook.remove()
    runs = torch.stack(runs).sum(dim=0).float()
    return result, (runs / runs.sum()).tolist()


def evaluate_checkpoint(path, data_dir, max_pairs, seed):
    try:
        state = checkpointing.load(path)
        model = checkpointing.model_from(state).eval()
    except checkpointing.CheckpointError as e:
        raise SystemExit(f"--ckpt: {e}") from None
    hp = dict(state["hyperparameters"])
    if data_dir:
        hp["data_dir"] = data_dir
    rate, segment = hp["sample_rate"], int(round(hp["segment_seconds"] * hp["sample_rate"]))
    tracks = data.run_tracks(hp)
    _, val_tracks = data.split_by_file(tracks, hp["val_fraction"], hp["seed"])
    pairs = data.PairDataset(val_tracks, segment)
    if len(pairs) == 0:
        raise SystemExit("no validation pairs: the validation files are shorter than two segments")
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(len(pairs))[:max_pairs])
    pairs.pairs = [pairs.pairs[i] for i in keep]
    outs, material = outputs(model, MDCTCodec(model.config.frame_dim), pairs, hp["batch_size"])
    rows = {"output": []}
    for index, out in enumerate(outs):
        x_in, x_tgt = (a.numpy() for a in pairs[index])
        track = pairs.pairs[index][0]
        other = tracks[(tracks.index(val_tracks[track]) + 1 + int(rng.integers(len(tracks) - 1))) % len(tracks)]
        other_audio = other.read(int(rng.integers(other.n_samples - segment + 1)), segment)
        rows["output"].append(verdict.measure(out, x_in, x_tgt, rate))
        for name, reference in baselines.references(x_in, x_tgt, other_audio, rate, rng).items():
            rows.setdefault(name, []).append(verdict.measure(reference, x_in, x_tgt, rate))
    print(f"{path} (epoch {state['epoch']}) on {len(val_tracks)} validation files of "
          f"{hp['data_dir'] or 'the demo music'}")
    if material:
        print("the final stage's runs come from: " + ", ".join(
            f"{share:.0%} {name}" for share, name in zip(material, ("the input", "stage 1's output", "the target"))))
    return rows


def evaluate_files(input_path, target_path, output_path, sample_rate, seed):
    try:
        x_in, x_tgt, out = (data.read_mono(p, sample_rate) for p in (input_path, target_path, output_path))
    except ValueError as e:
        raise SystemExit(f"cannot use {e}") from None
    n = len(out)
    x_in, x_tgt = np.resize(x_in, n), np.resize(x_tgt, n)  # as generate.py loops the clips to the output's length
    rng = np.random.default_rng(seed)
    rows = {"output": [verdict.measure(out, x_in, x_tgt, sample_rate)]}
    other = rng.standard_normal(n)  # no other file here: the row is left out below
    for name, reference in baselines.references(x_in, x_tgt, other, sample_rate, rng).items():
        if name != "another file":
            rows[name] = [verdict.measure(reference, x_in, x_tgt, sample_rate)]
    print(f"{output_path} against input {input_path} and target {target_path}, at {sample_rate} Hz")
    return rows


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--ckpt", help="a checkpoint written by train.py: judge its validation pairs")
    parser.add_argument("--data_dir", default="", help="with --ckpt: validate on this folder's files instead")
    parser.add_argument("--pairs", type=int, default=64, help="with --ckpt: at most this many validation pairs")
    parser.add_argument("--input", help="with --target and --output: judge one output file")
    parser.add_argument("--target")
    parser.add_argument("--output")
    parser.add_argument("--sample_rate", type=int, default=16000, help="with --output: the rate to judge at")
    parser.add_argument("--seed", type=int, default=0, help="noise references and the pair sample")
    parser.add_argument("--csv", help="also write the table to this CSV file")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error(f"--pairs={args.pairs} must be at least 1")
    if args.ckpt:
        rows = evaluate_checkpoint(args.ckpt, args.data_dir, args.pairs, args.seed)
    elif args.input and args.target and args.output:
        rows = evaluate_files(args.input, args.target, args.output, args.sample_rate, args.seed)
    else:
        parser.error("give --ckpt, or all three of --input, --target and --output")
    summary = judge(rows)
    print(table(summary, len(rows["output"])))
    if args.csv:
        write_csv(summary, args.csv)


def write_csv(summary, path):
    with open(path, "w") as f:
        f.write(",".join(["row", "blend", "copy", "hiss", *METRICS]) + "\n")
        for name, (counts, medians) in summary.items():
            f.write(",".join([name, *(f"{counts[v]:.4f}" for v in ("blend", "copy", "hiss")), *(f"{medians[k]:.4f}" for k in METRICS)]) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
