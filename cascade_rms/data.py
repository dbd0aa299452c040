"""
Audio in: the built-in demo music, and the user's own files and folders.

For training, both end as a list of tracks (mono float32 at the model's rate)
cut into consecutive segments; pair k is (segment k as input, segment k+1 as
target). A user's files are decoded, mixed to mono and resampled once into a
cache of raw float32 files; training then reads only the two segments it
needs, so memory does not grow with the size of the collection. Generation
(corpus.py) decodes the same way, also at the output's rate and channels.
"""

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr
import torch
from tqdm import tqdm

from . import atomic


def seconds_to_samples(seconds, sample_rate):
    """Every duration a user sets is in seconds; this is the one place it becomes samples."""
    return int(round(seconds * sample_rate))


# -----------------------------------------------------------------------------
# built-in demo music

SCALES = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10]}
PROGRESSIONS = [[0, 4, 5, 3], [0, 5, 3, 4], [5, 3, 0, 4], [0, 3, 4, 4], [0, 2, 5, 4]]  # scale degrees


def midi_hz(note):
    return 440.0 * 2.0 ** ((note - 69) / 12)


def add_note(buffer, start, seconds, hz, amplitude, sample_rate, harmonics, decay):
    """Mix one decaying harmonic tone into buffer at sample `start`."""
    n = min(int(seconds * sample_rate), len(buffer) - start)
    if n <= 0:
        return
    t = np.arange(n) / sample_rate
    tone = sum(np.sin(2 * np.pi * hz * h * t) / h**1.5 for h in range(1, harmonics + 1))
    attack = np.minimum(1.0, t / 0.005)
    release = np.minimum(1.0, (seconds - t) / 0.02).clip(0.0)
    buffer[start : start + n] += amplitude * tone * np.exp(-decay * t) * attack * release


def add_drum(buffer, start, kind, amplitude, sample_rate, rng):
    n = min(int(0.25 * sample_rate), len(buffer) - start)
    if n <= 0:
        return
    t = np.arange(n) / sample_rate
    if kind == "kick":  # a sine sweeping down from 150 to 45 Hz
        hit = np.sin(2 * np.pi * (45 * t + 105 * (1 - np.exp(-t * 30)) / 30)) * np.exp(-t * 18)
    elif kind == "snare":
        hit = (0.7 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * 190 * t)) * np.exp(-t * 25)
    else:  # hat: differentiated noise is bright
        hit = np.diff(rng.standard_normal(n + 1)) * np.exp(-t * 80)
    buffer[start : start + n] += amplitude * hit


def demo_piece(seed, seconds, sample_rate):
    """A short synthetic song: drums, bass, chords and a melody, in sections of
    four bars that change progression, density and loudness. # (N,) float32"""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    out = np.zeros(n)
    beat = 60.0 / rng.uniform(90, 140)
    scale = SCALES[rng.choice(list(SCALES))]
    root = int(rng.integers(45, 57))

    def degree_note(degree, octave=0):
        return root + 12 * (octave + degree // 7) + scale[degree % 7]

    bar, section = 0, -1
    while bar * 4 * beat < seconds:
        if bar % 4 == 0:  # a new section
            section += 1
            progression = PROGRESSIONS[rng.integers(len(PROGRESSIONS))]
            drums_on = rng.random() > 0.2 or section == 0
            melody_density = rng.uniform(0.3, 0.9)
            level = rng.uniform(0.5, 1.0)
        chord = progression[bar % 4]
        bar_start = bar * 4 * beat
        for note in (0, 2, 4):
            add_note(out, int(bar_start * sample_rate), 4 * beat, midi_hz(degree_note(chord + note, 1)),
                     0.05 * level, sample_rate, harmonics=4, decay=0.6)
        for b in range(4):
            at = int((bar_start + b * beat) * sample_rate)
            add_note(out, at, beat, midi_hz(degree_note(chord, -1)), 0.18 * level, sample_rate, harmonics=2, decay=3.0)
            if drums_on:
                add_drum(out, at, "kick" if b % 2 == 0 else "snare", 0.3 * level, sample_rate, rng)
                for half in (0, 1):
                    add_drum(out, at + int(half * beat / 2 * sample_rate), "hat", 0.04 * level, sample_rate, rng)
        for eighth in range(8):
            if rng.random() < melody_density:
                degree = chord + int(rng.choice([0, 2, 4, 7, 1, 3]))
                add_note(out, int((bar_start + eighth * beat / 2) * sample_rate), beat / 2 * rng.choice([1, 2]),
                         midi_hz(degree_note(degree, 2)), 0.1 * level, sample_rate, harmonics=3, decay=4.0)
        bar += 1
    fade = np.minimum(1.0, np.minimum(np.arange(n), n - np.arange(n)) / (0.5 * sample_rate))
    out *= fade
    return (0.5 * out / max(np.abs(out).max(), 1e-9)).astype(np.float32)


# -----------------------------------------------------------------------------
# tracks and pairs


@dataclass
class Track:
    name: str  # what warnings and summaries call it
    audio: np.ndarray = None  # in memory (demo music), or
    cache_path: str = None  # raw float32 samples on disk (user files)
    n_samples: int = 0

    def read(self, start, count):
        if self.audio is not None:
            return self.audio[start : start + count]
        return np.fromfile(self.cache_path, dtype=np.float32, count=count, offset=4 * start)


@dataclass
class Batch:
    """A batch of pairs, or of triplets (cascade_rms/scores.py: with material and truth). # each (B, N), material (B, M)"""
    inputs: torch.Tensor
    targets: torch.Tensor
    materials: torch.Tensor | None = None
    material_lengths: torch.Tensor | None = None  # (B,) long: samples of each material before its padding
    truths: torch.Tensor | None = None
    material_keys: tuple | None = None  # what each material is, the same key for the same audio
    rolls: torch.Tensor | None = None  # (B, T, N_KEYS) float: the keys sounding in each input frame (scores)
    material_rolls: torch.Tensor | None = None  # (B, M // D + 1, N_KEYS) float: and in each material frame


class PairDataset:
    """(segment k, segment k+1) of every track, or with shuffle_targets, segment
    k of one track against a segment of another, redrawn every epoch."""

    def __init__(self, tracks, segment_samples, shuffle_targets=False, seed=0):
        self.tracks, self.segment_samples = tracks, segment_samples
        self.shuffle_targets, self.seed = shuffle_targets, seed
        self.pairs = [(i, k) for i, t in enumerate(tracks) for k in range(t.n_samples // segment_samples - 1)]
        if shuffle_targets and len(tracks) < 2:
            raise ValueError("shuffle_targets=True needs at least two tracks to draw targets from")
        self.set_epoch(0)

    def set_epoch(self, epoch):
        if not self.shuffle_targets:
            return
        rng = np.random.default_rng([self.seed, epoch])
        self.targets = []
        for track, _ in self.pairs:
            other = (track + 1 + int(rng.integers(len(self.tracks) - 1))) % len(self.tracks)
            n_segments = self.tracks[other].n_samples // self.segment_samples
            self.targets.append((other, int(rng.integers(n_segments))))

    def __len__(self):
        return len(self.pairs)

    def minutes(self, sample_rate):
        return len(self.pairs) * self.segment_samples / sample_rate / 60.0

    def __getitem__(self, index):  # -> input (N,), target (N,) as float32 tensors
        track, k = self.pairs[index]
        n = self.segment_samples
        if self.shuffle_targets:
            other, j = self.targets[index]
            return (torch.from_numpy(self.tracks[track].read(k * n, n).copy()),
                    torch.from_numpy(self.tracks[other].read(j * n, n).copy()))
        both = torch.from_numpy(self.tracks[track].read(k * n, 2 * n).copy())
        return both[:n], both[n:]

    def batch(self, indices):
        inputs, targets = zip(*(self[i] for i in indices))
        return Batch(torch.stack(inputs), torch.stack(targets))


def demo_tracks(n_pieces, seconds, sample_rate, seed):
    return [Track(f"demo piece {seed + i}", audio=(a := demo_piece(seed + i, seconds, sample_rate)), n_samples=len(a))
            for i in range(n_pieces)]


# -----------------------------------------------------------------------------
# the user's own audio

PEAK_LIMIT = 4.0  # +12 dBFS: beyond this a float file holds garbage, not music


def audio_files(folder):
    """Every file under folder that is not hidden, sorted so runs are reproducible."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")]
    return found


def checked(block, channels):
    """(N, c) samples as (N, channels): kept as they are when the counts agree, else mixed to
    mono (and that copied to every channel); values that are not audio are refused."""
    if not np.isfinite(block).all():
        raise ValueError("contains NaN or Inf samples")
    if np.abs(block).max(initial=0.0) > PEAK_LIMIT:
        raise ValueError(f"has samples beyond +-{PEAK_LIMIT:g} (audio lies in [-1, 1])")
    if block.shape[1] == channels:
        return block
    return np.repeat(block.mean(axis=1, keepdims=True), channels, axis=1)


def decoded_blocks(path, sample_rate, channels=1):
    """Decode path block by block, resampled to sample_rate and mixed to `channels`, so a
    file of any length needs one block of memory. Raises what libsndfile and soxr
    raise on a bad file, or ValueError for values that are not audio. Yields each
    block and the seconds of the file it came from. # (n, channels), float"""
    info = sf.info(path)
    resampler = None if info.samplerate == sample_rate else soxr.ResampleStream(info.samplerate, sample_rate, channels)
    for block in sf.blocks(path, blocksize=1 << 18, dtype="float32", always_2d=True):
        block = checked(block, channels)
        yield (block if resampler is None else resampler.resample_chunk(block)).astype(np.float32), len(block) / info.samplerate
    if resampler is not None:
        yield resampler.resample_chunk(np.zeros((0, channels), np.float32), last=True).astype(np.float32), 0.0


DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, ValueError)  # what decoded_blocks raises on a bad file


def read_audio(path, sample_rate, channels=None):
    """A whole file as float32 at sample_rate: mixed to mono (N,) by default, or (N, channels)
    for any channel count, 1 included; ValueError naming the file if unusable."""
    try:
        blocks = (b for b, _ in decoded_blocks(path, sample_rate, channels or 1))
        audio = np.concatenate([np.zeros((0, channels or 1), np.float32), *blocks])
    except DECODE_ERRORS as e:
        raise ValueError(f"{path}: {str(e).strip() or type(e).__name__}") from None
    if len(audio) == 0:
        raise ValueError(f"{path}: holds no samples")
    return audio[:, 0] if channels is None else audio


def file_key(path, *more):
    """A cache key for what is made of a file: its path, size and mtime, and anything else it
    depends on, hashed. # hex str"""
    stat = os.stat(path)
    return hashlib.sha1("|".join([os.path.abspath(path), str(stat.st_size), str(stat.st_mtime_ns), *map(str, more)])
                        .encode()).hexdigest()


def cache_file(path, sample_rate, cache_dir, warn, channels=1, progress=None):
    """Decode path to float32 at sample_rate and `channels` (interleaved) in cache_dir, once:
    a cache entry is keyed by the file's path, size and mtime. Returns a Track (n_samples
    per channel), or None after one warning line naming the file and the reason.
    progress(seconds) is told of every block of the file decoded."""
    cached = os.path.join(cache_dir, file_key(path, sample_rate, *([channels] if channels > 1 else [])) + ".f32")
    if os.path.exists(cached):
        track = Track(path, cache_path=cached, n_samples=os.path.getsize(cached) // (4 * channels))
        if progress is not None:
            progress(track.n_samples / sample_rate)
        return track
    if os.path.getsize(path) == 0:
        warn(path, "empty file")
        return None
    try:
        os.makedirs(cache_dir, exist_ok=True)
        with atomic.written(cached) as partial, open(partial, "wb") as f:
            for block, seconds in decoded_blocks(path, sample_rate, channels):
                f.write(block.tobytes())
                if progress is not None:
                    progress(seconds)
    except DECODE_ERRORS as e:
        warn(path, str(e).strip() or type(e).__name__)
        return None
    return Track(path, cache_path=cached, n_samples=os.path.getsize(cached) // (4 * channels))


def seconds_of(paths):
    """The files' total length in seconds as their headers give it (0 for an unreadable one)."""
    total = 0.0
    for path in paths:
        try:
            total += sf.info(path).duration
        except DECODE_ERRORS:
            pass
    return total


def cached_tracks(paths, sample_rate, cache_dir, warn, channels=1, what="decoding"):
    """cache_file for every path, with a progress bar (elapsed time, ETA) over the seconds of
    audio to decode: a large folder takes minutes the first time. # -> list of Track or None"""
    with tqdm(total=round(seconds_of(paths)), desc=what, unit="s audio", leave=False, dynamic_ncols=True) as bar:
        return [cache_file(path, sample_rate, cache_dir, warn, channels, bar.update) for path in paths]


def folder_tracks(folder, sample_rate, segment_samples, cache_dir, log=print):
    """Every usable file under folder as a Track; each unusable one is skipped
    with one warning line. Raises SystemExit if nothing usable remains."""
    if not os.path.isdir(folder):
        raise SystemExit(f"data_dir={folder!r} is not a folder: point --data_dir at a folder of audio files")
    reasons = {}

    def warn(path, reason):
        reasons[path] = reason
        log(f"warning: skipping {path}: {reason}")

    tracks = []
    paths = audio_files(folder)
    for path, track in zip(paths, cached_tracks(paths, sample_rate, cache_dir, warn, what=f"decoding {folder}")):
        if track is not None and track.n_samples < 2 * segment_samples:
            warn(path, f"too short: {track.n_samples / sample_rate:.2f} s, a pair needs two segments "
                       f"({2 * segment_samples / sample_rate:.2f} s)")
            track = None
        if track is not None:
            tracks.append(track)
    if reasons:
        log(f"skipped {len(reasons)} of {len(reasons) + len(tracks)} files in {folder}")
    if not tracks:
        why = "; ".join(sorted(set(reasons.values()))) if reasons else "it holds no files"
        raise SystemExit(f"no usable audio in {folder}: {why}. Add WAV/FLAC/OGG/MP3/AIFF files of at least "
                         f"{2 * segment_samples / sample_rate:.2f} s, or drop --data_dir to train on the demo music.")
    return tracks


@dataclass
class DataConfig:
    """Where a run's audio comes from; train.py's block sets every field (hyperparameters.section)."""
    data_dir: str  # a folder of the user's audio, or "" for the demo music
    sample_rate: int  # the model's
    segment_seconds: float  # one clip of a pair
    demo_pieces: int
    demo_seconds: float
    cache_dir: str  # where user audio is decoded to, once
    seed: int  # of the demo music, and of the split into training and validation files


def run_tracks(config, log=print):
    """The tracks a run trains and validates on: the demo music, or every usable file of
    config.data_dir (at least two: validation needs a file of its own)."""
    if not config.data_dir:
        return demo_tracks(config.demo_pieces, config.demo_seconds, config.sample_rate, config.seed)
    segment = seconds_to_samples(config.segment_seconds, config.sample_rate)
    tracks = folder_tracks(config.data_dir, config.sample_rate, segment, config.cache_dir, log)
    if len(tracks) < 2:
        raise SystemExit(f"{config.data_dir} has one usable file; validation needs a file of its own, add another")
    return tracks


def split_by_file(tracks, val_fraction, seed):
    """Seeded split of whole tracks, so no recording is on both sides."""
    order = np.random.default_rng(seed).permutation(len(tracks))
    n_val = min(max(1, round(val_fraction * len(tracks))), len(tracks) - 1) if len(tracks) > 1 else 0
    return [tracks[i] for i in sorted(order[n_val:])], [tracks[i] for i in sorted(order[:n_val])]
