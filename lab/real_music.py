"""
Two genres of freely licensed recorded music from Debian: on each, the evaluation of a checkpoint
trained elsewhere, then a run trained there and its evaluation (docs/results.md).

    python -m lab.real_music                      # the newest checkpoint in checkpoints/
    python -m lab.real_music --music_dir=DIR --ckpt=checkpoints/epoch_6_step_1034.pth
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys

from cascade_rms import atomic, checkpointing, hyperparameters
from lab import ROOT, runs

# Freely licensed recorded music in Debian's archive, one collection per genre: the packages and which
# of their OGG files are whole songs (Frets on Fire's song.ogg is the band without the lead guitar)
RECORDED_MUSIC = {
    "orchestral": {"hyperrogue-music": "usr/share/hyperrogue/music/*.ogg"},  # CC-BY-SA-3.0 game score
    "metal": {"fretsonfire-songs-muldjord": "usr/share/games/fretsonfire/data/songs/muldjord/*/song.ogg",  # CC-BY-SA-3.0
              "fretsonfire-songs-sectoid": "usr/share/games/fretsonfire/data/songs/sectoid/*/song.ogg"},  # MIT-style
}


def fetch_debian_music(folder, packages):
    """Download packages ({name: glob of its songs}) with apt-get (no root needed) and unpack
    their songs into folder/songs; a folder already filled is reused."""
    songs = os.path.join(folder, "songs")
    if os.path.isdir(songs) and os.listdir(songs):
        return songs
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise SystemExit("lab.real_music needs apt-get and dpkg-deb (a Debian or Ubuntu machine); or pass --music_dir "
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
    with atomic.written(songs) as partial:
        os.makedirs(partial)
        for package, pattern in packages.items():
            for path in sorted(glob.glob(os.path.join(unpacked, pattern))):
                song = os.path.dirname(path) if os.path.basename(path) == "song.ogg" else path.removesuffix(".ogg")
                shutil.copy(path, os.path.join(partial, f"{package}_{os.path.basename(song).replace(' ', '_')}.ogg"))
    shutil.rmtree(unpacked)
    return songs


def real_music(music_dir, ckpt, epochs, root):
    """On each collection of recorded music: the evaluation of ckpt (trained elsewhere), then of a
    checkpoint trained on that collection."""
    collections = {os.path.basename(os.path.normpath(music_dir)): music_dir} if music_dir else {
        genre: fetch_debian_music(os.path.join(".cache", "debian-music", genre), packages)
        for genre, packages in RECORDED_MUSIC.items()}
    evaluate = [sys.executable, os.path.join(ROOT, "evaluate.py")]
    for genre, songs in collections.items():
        print(f"\n=== {genre}: {len(os.listdir(songs))} files in {songs}", flush=True)
        if ckpt:
            print(f"\n== {ckpt}, trained elsewhere, judged on {genre}", flush=True)
            subprocess.run([*evaluate, f"--ckpt={ckpt}", f"--data_dir={songs}"], check=True)
        name = f"recorded:{genre}"
        print(f"\n== trained on {genre} for {epochs} epochs, judged on its own validation files", flush=True)
        row, note = runs.train_and_judge(name, [f"--data_dir={songs}"], epochs, root)
        if row is None:
            raise SystemExit(f"training on {songs} failed ({note}); see {os.path.join(root, name, 'train.log')}")
        with open(os.path.join(root, name, "evaluate.txt")) as f:
            print(f.read() + f"its last health report: warnings {row['warnings'] or 'none'} ({note})", flush=True)


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m lab.real_music", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--music_dir", default="", help="recorded music to use instead of Debian's")
    parser.add_argument("--ckpt", default="", help="the checkpoint to judge (default: newest in checkpoints/)")
    parser.add_argument("--epochs", type=int, default=hyperparameters.defaults()["epochs"],
                        help="epochs of every training run (train.py's default)")
    parser.add_argument("--out_dir", default="experiments", help="where the training runs go")
    args = parser.parse_args(argv)
    ckpt = args.ckpt or next(iter(checkpointing.files("checkpoints") if os.path.isdir("checkpoints") else []), "")
    real_music(args.music_dir, ckpt, args.epochs, args.out_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
