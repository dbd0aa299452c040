"""
The experiments behind the defaults, each one command.

    python experiments.py --variants              # the original design and its three remedies, ours, and
                                                  # ours without each of its choices: 10 epochs and an
                                                  # evaluation each (~40 min)
    python experiments.py --variants=original,ours --epochs=3
    python experiments.py --thresholds            # every reference's verdict metrics on many demo pairs
    python experiments.py --thresholds --music_dir=.cache/debian-music/metal/songs   # and on recorded music
    python experiments.py --seek_truth            # the head seeking the ground truth's fine levels: the
                                                  # ceiling of a prediction of them (docs/LOG.md)
    python experiments.py --real_music            # fetch two genres of freely licensed recorded music from
                                                  # Debian; on each, evaluate the newest checkpoint, then
                                                  # train there and evaluate that checkpoint

Variants run train.py itself (a subprocess each, into experiments/<name>/) and read its
metrics.csv: the table shows what a user would see at the end of that run.
"""

import argparse
import csv
import glob
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import torch

from lib import (
    baselines,
    checkpointing,
    data,
    groundtruth,
    hyperparameters,
    scores,
    verdict,
)
from model import Cascade, CascadeConfig, combined_rms

HERE = os.path.dirname(os.path.abspath(__file__))
# the original design's network and loss: a linear head after per-frame LayerNorms, dropout 0.1, trained on novelty alone
ORIGINAL = ["--head=linear", "--frame_norm=True", "--dropout=0.1", "--novelty_weight=0.85", "--follow_weight=0",
        "--sound_weight=0", "--copy_weight=0"]
# the two objective terms the levers below were measured with (docs/LOG.md: they went back to 0 after)
HARMONY_ONSETS = ["--harmony_weight=1", "--onsets_weight=1"]
VARIANTS = {
    "original": ORIGINAL,
    "original+A:recon_0.02": ORIGINAL + ["--recon_weight=0.02"],
    "original+B:final_residual_0.3": ORIGINAL + ["--final_residual=0.3"],
    "original+C:novelty_0.5": [a if not a.startswith("--novelty_weight") else "--novelty_weight=0.5" for a in ORIGINAL],
    "ours": [],
    "ours:linear_head": ["--head=linear"],
    "ours:frame_norm": ["--frame_norm=True"],
    "ours:no_sound": ["--sound_weight=0"],
    "ours:no_copy": ["--copy_weight=0"],
    "ours:min_shift_0": ["--min_shift_frames=0"],
    "ours:untrained": ["--lr=1e-12"],  # the pointer's nearest-neighbour prior alone
    "ours:dropout_0.1": ["--dropout=0.1"],
    # the levers of the choice and its training (docs/LOG.md)
    "ours:harmony_onsets": HARMONY_ONSETS,
    "ours:straight_through": HARMONY_ONSETS + ["--pointer_straight_through=True"],
    "ours:seek": HARMONY_ONSETS + ["--pointer_seek=True"],
    "ours:corpus_all": HARMONY_ONSETS + ["--pointer_corpus=all"],
    "ours:no_chroma": HARMONY_ONSETS + ["--pointer_chroma=0"],
    "ours:no_continuity": HARMONY_ONSETS + ["--pointer_continuity=0"],
}
EVALUATED = ("dist_in", "dist_tgt", "chroma_in", "onset_f_in", "mfcc_tgt")  # from evaluate.py: content, timbre
COLUMNS = ("grad_norm_max", "scale1", "scale2", "envelope", "corr_in", "corr_tgt", "blend_share", "copy_share", "hiss_share",
           "unrelated_share", *EVALUATED)
# Freely licensed recorded music in Debian's archive, one collection per genre: the packages and which
# of their OGG files are whole songs (Frets on Fire's song.ogg is the band without the lead guitar)
RECORDED_MUSIC = {
    "orchestral": {"hyperrogue-music": "usr/share/hyperrogue/music/*.ogg"},  # CC-BY-SA-3.0 game score
    "metal": {"fretsonfire-songs-muldjord": "usr/share/games/fretsonfire/data/songs/muldjord/*/song.ogg",  # CC-BY-SA-3.0
              "fretsonfire-songs-sectoid": "usr/share/games/fretsonfire/data/songs/sectoid/*/song.ogg"},  # MIT-style
}


def run_variant(name, overrides, epochs, root):
    """Train one variant with train.py; returns its last epoch row of metrics.csv and how many epochs warned."""
    out_dir = os.path.join(root, name)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)  # ours alone: a variant is rerun from scratch
    # the demo music, as the lab log's tables were measured: its evaluation is against input and target
    command = [sys.executable, os.path.join(HERE, "train.py"), "--dataset=demo", f"--out_dir={out_dir}", f"--epochs={epochs}",
               *overrides]
    t0 = time.time()
    result = subprocess.run(command, capture_output=True, text=True, cwd=HERE)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "train.log"), "w") as f:
        f.write(result.stdout + result.stderr)
    if result.returncode != 0:
        return None, f"exit {result.returncode}: {(result.stderr.strip().splitlines() or ['?'])[-1]}"
    with open(os.path.join(out_dir, "metrics.csv")) as f:
        epochs_rows = [r for r in csv.DictReader(f) if r["kind"] == "epoch"]
    judged = os.path.join(out_dir, "evaluate.csv")
    result = subprocess.run([sys.executable, os.path.join(HERE, "evaluate.py"), f"--ckpt={checkpointing.files(out_dir)[0]}",
                             f"--csv={judged}"], check=True, capture_output=True, text=True, cwd=HERE)
    with open(os.path.join(out_dir, "evaluate.txt"), "w") as f:
        f.write(result.stdout)
    with open(judged) as f:
        output = next(csv.DictReader(f))  # the model's row; the references follow
    row = {**epochs_rows[-1], **{k: output[k] for k in EVALUATED}}
    return row, f"{sum(1 for r in epochs_rows if r['warnings'])}/{len(epochs_rows)} epochs warned, {time.time() - t0:.0f} s"


def variants(names, epochs, root):
    header = f"{'variant':<27}" + "".join(f" {c.removesuffix('_share'):>9}" for c in COLUMNS) + "  last epoch's warnings"
    print(header + "\n" + "-" * len(header), flush=True)
    for name in names:
        row, note = run_variant(name, VARIANTS[name], epochs, root)
        if row is None:
            print(f"{name:<27} {note}", flush=True)
            continue
        cells = "".join(f" {float(row[c]):>9.3f}" for c in COLUMNS)
        print(f"{name:<27}{cells}  {row['warnings'] or 'none'} ({note})", flush=True)


def thresholds(music_dir, n_pairs, seed):
    """The verdict's metrics of every reference, and of the mosaics made from the pair with no
    training, over many pairs of every file (train and validation alike): the ranges
    verdict.py's thresholds are read from."""
    hp = {**hyperparameters.of_script(os.path.join(HERE, "train.py")), "data_dir": music_dir}
    config, source = hyperparameters.model_config(hp), hyperparameters.section(data.DataConfig, hp)
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
            rows.setdefault(name, []).append(verdict.measure(audio, x_in, x_tgt, rate))
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


def seek_truth(fine_weights=(1.0, 4.0, 16.0, 100.0)):
    """The untrained head on the default run's held-out triplets, with pointer_fine at each weight,
    seeking the input's fine levels (what an untrained prediction seeks) or the ground truth's own
    (a perfect prediction): the median log-spectral distance to the truth, with the choice's
    other terms (chroma, continuity) at their defaults and off."""
    hp = {**hyperparameters.of_script(os.path.join(HERE, "train.py"))}
    _, triplets = scores.triplet_sets(hyperparameters.section(scores.ScoresConfig, hp), log=lambda *_: None)
    rate = hp["sample_rate"]
    print(f"{len(triplets)} held-out triplets; median log-spectral distance to the truth (dB)")
    print(f"{'pointer_fine':>12} {'other terms':>12} {'seeks input':>12} {'seeks truth':>12}")
    for weight in fine_weights:
        for others in ({}, {"pointer_chroma": 0.0, "pointer_continuity": 0.0}):
            torch.manual_seed(0)
            model = Cascade(CascadeConfig(pointer_fine=weight, **others)).eval()
            codec, distances = model.stage1.pointer.codec, {"input": [], "truth": []}
            for index in range(len(triplets)):
                x_in, x_tgt, material, length, truth = triplets[index]
                frames = [codec.encode(torch.from_numpy(a)[None]) for a in (x_in, x_tgt, truth)]
                corpus = model.stage1.pointer.describe(torch.from_numpy(material)[None], torch.tensor([length]))
                level = combined_rms(frames[0], frames[1], model.config.rms_floor)
                for seeks in distances:
                    for stage in (model.stage1, model.stage2):  # a perfect prediction stands in for the learned one
                        wanted = stage.pointer.fine_levels(frames[2] / level) if seeks == "truth" else None
                        stage.pointer.sought_fine = (lambda x, f, w=wanted, head=stage.pointer:
                                                     w if w is not None else head.fine_levels(f))
                    with torch.no_grad():
                        out, _ = model(frames[0], frames[1], corpus)
                    audio = codec.decode(out, len(x_in))[0].numpy()
                    distances[seeks].append(groundtruth.log_spectral_distance(audio, truth, rate, model.config.frame_dim))
            print(f"{weight:>12g} {'off' if others else 'defaults':>12} {np.median(distances['input']):>12.2f} "
                  f"{np.median(distances['truth']):>12.2f}", flush=True)


def fetch_debian_music(folder, packages):
    """Download packages ({name: glob of its songs}) with apt-get (no root needed) and unpack
    their songs into folder/songs; a folder already filled is reused."""
    songs = os.path.join(folder, "songs")
    if os.path.isdir(songs) and os.listdir(songs):
        return songs
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise SystemExit("--real_music needs apt-get and dpkg-deb (a Debian or Ubuntu machine); or pass --music_dir "
                         "with a folder of recorded music")
    debs = os.path.join(folder, "debs")
    os.makedirs(debs, exist_ok=True)
    for package in packages:
        result = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"apt-get download {package} failed: {result.stderr.strip()[-500:]}; "
                             f"run 'apt-get update' first, or pass --music_dir")
    unpacked = os.path.join(folder, "unpacked")
    for deb in glob.glob(os.path.join(debs, "*.deb")):
        subprocess.run(["dpkg-deb", "-x", deb, unpacked], check=True)
    os.makedirs(songs + ".tmp", exist_ok=True)
    for package, pattern in packages.items():
        for path in sorted(glob.glob(os.path.join(unpacked, pattern))):
            song = os.path.dirname(path) if os.path.basename(path) == "song.ogg" else path.removesuffix(".ogg")
            shutil.copy(path, os.path.join(songs + ".tmp", f"{package}_{os.path.basename(song).replace(' ', '_')}.ogg"))
    os.replace(songs + ".tmp", songs)
    shutil.rmtree(unpacked)
    return songs


def real_music(music_dir, ckpt, epochs, root):
    """On each collection of recorded music: the evaluation of ckpt (trained elsewhere), then of a
    checkpoint trained on that collection."""
    collections = {os.path.basename(os.path.normpath(music_dir)): music_dir} if music_dir else {
        genre: fetch_debian_music(os.path.join(".cache", "debian-music", genre), packages)
        for genre, packages in RECORDED_MUSIC.items()}
    evaluate = [sys.executable, os.path.join(HERE, "evaluate.py")]
    for genre, songs in collections.items():
        print(f"\n=== {genre}: {len(os.listdir(songs))} files in {songs}", flush=True)
        if ckpt:
            print(f"\n== {ckpt}, trained elsewhere, judged on {genre}", flush=True)
            subprocess.run([*evaluate, f"--ckpt={ckpt}", f"--data_dir={songs}"], check=True)
        name = f"recorded:{genre}"
        print(f"\n== trained on {genre} for {epochs} epochs, judged on its own validation files", flush=True)
        row, note = run_variant(name, [f"--data_dir={songs}"], epochs, root)
        if row is None:
            raise SystemExit(f"training on {songs} failed ({note}); see {os.path.join(root, name, 'train.log')}")
        with open(os.path.join(root, name, "evaluate.txt")) as f:
            print(f.read() + f"its last health report: warnings {row['warnings'] or 'none'} ({note})", flush=True)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--variants", nargs="?", const=",".join(VARIANTS),
                        help=f"train and compare variants (comma-separated; all by default): {', '.join(VARIANTS)}")
    parser.add_argument("--thresholds", action="store_true", help="print every reference's verdict metrics")
    parser.add_argument("--real_music", action="store_true", help="judge and train on recorded music")
    parser.add_argument("--seek_truth", action="store_true", help="the untrained head seeking the ground truth's "
                        "fine levels: what a perfect prediction of them would give")
    parser.add_argument("--music_dir", default="", help="recorded music to use instead of Debian's")
    parser.add_argument("--ckpt", default="", help="--real_music: the checkpoint to judge (default: newest in checkpoints/)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every training run (train.py's default: 10)")
    parser.add_argument("--pairs", type=int, default=200, help="--thresholds: pairs per collection")
    parser.add_argument("--out_dir", default="experiments", help="where the training runs go")
    args = parser.parse_args(argv)
    if not (args.variants or args.thresholds or args.real_music or args.seek_truth):
        parser.error("choose --variants, --thresholds, --seek_truth or --real_music")
    if args.seek_truth:
        seek_truth()
    if args.variants:
        unknown = [name for name in args.variants.split(",") if name not in VARIANTS]
        if unknown:
            parser.error(f"unknown variants {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
        variants(args.variants.split(","), args.epochs, args.out_dir)
    if args.thresholds:
        thresholds("", args.pairs, 0)
        if args.music_dir:
            thresholds(args.music_dir, args.pairs, 0)
    if args.real_music:
        ckpt = args.ckpt or next(iter(checkpointing.files("checkpoints") if os.path.isdir("checkpoints") else []), "")
        real_music(args.music_dir, ckpt, args.epochs, args.out_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
