"""
Data with a right answer: scores rendered with General MIDI instruments.

Render one score S with instrument A and with instrument B, and another score S' with B:

    input          S played by A
    target         S' played by B: the clip the transformers see, inside the material
    material       the first material_seconds of S' played by B: what the pointer heads play
    ground truth   S played by B, the input's excerpt: the input's music with the target's sounds

This is how music style transfer is evaluated (Cifka et al., ICASSP 2021). Scores are MIDI or
MusicXML files, or Bach chorales from music21's corpus (they ship in its wheel); rendering is
symusic's SoundFont synthesizer, with pretty_midi's General MIDI SoundFont (TimGM6mb, in its
wheel) by default. Renders are cached, so a run is offline and pays for them once.
"""

import hashlib
import importlib.util
import os
import struct
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from .data import Batch, seconds_to_samples

SCORE_SUFFIXES = (".mid", ".midi", ".mxl", ".musicxml", ".xml")
RENDER_RMS = 0.05  # every render at this RMS (-26 dBFS): input, material and truth share a level
SILENT_RMS = 1e-6  # a render quieter than this (-120 dBFS) plays nothing
BACH_CHORALES = "music21's Bach chorales"


def default_soundfont():
    """TimGM6mb.sf2, the General MIDI SoundFont in pretty_midi's wheel (found without importing pretty_midi)."""
    spec = importlib.util.find_spec("pretty_midi")
    if spec is None:
        raise SystemExit("the default SoundFont comes with pretty_midi: pip install -r requirements.txt")
    return os.path.join(spec.submodule_search_locations[0], "TimGM6mb.sf2")


def soundfont_programs(path):
    """The General MIDI programs (bank 0 presets) a SoundFont holds, read from its preset headers
    (the RIFF 'phdr' chunk); ValueError naming the file if it is not a SoundFont."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"soundfont {path}: {e.strerror}") from None
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise ValueError(f"soundfont {path} is not a SoundFont (.sf2/.sf3): no RIFF 'sfbk' header")
    at = data.find(b"phdr", 12)
    if at < 0:
        raise ValueError(f"soundfont {path} has no preset headers (phdr): not a usable SoundFont")
    size = struct.unpack_from("<I", data, at + 4)[0]
    records = data[at + 8 : at + 8 + size]
    programs = set()
    for offset in range(0, len(records) - 38, 38):  # the last record is the terminal 'EOP'
        preset, bank = struct.unpack_from("<HH", records, offset + 20)
        if bank == 0:
            programs.add(preset)
    return programs


def synthesizer(soundfont, programs, sample_rate):
    """symusic's Synthesizer for the SoundFont, after checking it holds every program asked for;
    SystemExit naming the file, or the missing programs, otherwise."""
    import symusic

    try:
        missing = sorted(set(programs) - soundfont_programs(soundfont))
    except ValueError as e:
        raise SystemExit(f"--{e}; give --soundfont a .sf2 or .sf3 file") from None
    if missing:
        raise SystemExit(f"--soundfont {soundfont} lacks General MIDI program(s) {missing}: choose programs it "
                         f"holds (--train_programs, --val_programs) or another SoundFont")
    try:
        return symusic.Synthesizer(soundfont, sample_rate=sample_rate)
    except RuntimeError as e:
        raise SystemExit(f"--soundfont {soundfont} does not load: {e}") from None


def score_files(score_dir, n_pieces):
    """The scores a run renders: every MIDI or MusicXML file under score_dir (sorted), or the first
    n_pieces of music21's Bach chorales when score_dir is empty."""
    if not score_dir:
        import music21

        chorales = sorted(str(p) for p in music21.corpus.getComposer("bach") if os.path.basename(str(p)).startswith("bwv"))
        return chorales[:n_pieces]
    if not os.path.isdir(score_dir):
        raise SystemExit(f"--score_dir={score_dir!r} is not a folder: point it at a folder of MIDI or MusicXML files")
    found = sorted(os.path.join(root, name) for root, _, names in os.walk(score_dir) for name in names
                   if name.lower().endswith(SCORE_SUFFIXES) and not name.startswith("."))
    if not found:
        raise SystemExit(f"--score_dir={score_dir} holds no score ({', '.join(SCORE_SUFFIXES)} files)")
    return found


def read_score(path):
    """A score file as a symusic Score (MusicXML through music21); ValueError naming the file if
    it cannot be read or holds no notes."""
    import symusic

    try:
        if path.lower().endswith((".mid", ".midi")):
            score = symusic.Score(path)
        else:
            import music21

            with tempfile.TemporaryDirectory() as tmp:
                midi = music21.converter.parse(path).write("midi", fp=os.path.join(tmp, "score.mid"))
                score = symusic.Score(str(midi))
    except Exception as e:  # music21 and symusic raise many types for a file that is not a score
        raise ValueError(f"{path}: not a readable score ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if sum(len(track.notes) for track in score.tracks) == 0:
        raise ValueError(f"{path}: the score holds no notes")
    return score


def render(score, program, synth):
    """The score with every part played by one General MIDI program, mono, at RENDER_RMS; ValueError
    if the program plays it as silence or non-finite samples (TimGM6mb's 78, whistle, does). # (N,)"""
    score = score.copy()
    for track in score.tracks:
        track.program, track.is_drum = program, False
    audio = np.asarray(synth.render(score, stereo=False), dtype=np.float32).reshape(-1)
    level = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    if not np.isfinite(level) or level < SILENT_RMS:
        raise ValueError(f"program {program} renders {'non-finite samples' if not np.isfinite(level) else 'silence'}")
    return audio * (RENDER_RMS / level)


def cache_key(path, program, soundfont, sample_rate):
    stamp = "|".join(f"{os.path.abspath(p)}|{os.path.getsize(p)}|{os.stat(p).st_mtime_ns}" for p in (path, soundfont))
    return hashlib.sha1(f"{stamp}|{program}|{sample_rate}|{RENDER_RMS}".encode()).hexdigest()


def rendered(paths, programs, soundfont, sample_rate, cache_dir, log=print):
    """Every score of paths played by every program, decoded from the cache or rendered into it:
    {(piece index, program): audio (N,)}. A score that cannot be read or has no notes is skipped
    with one warning line; SystemExit if none is left."""
    synth = None
    os.makedirs(cache_dir, exist_ok=True)
    renders, skipped = {}, {}
    with tqdm(total=len(paths) * len(programs), desc="rendering scores", unit="render", leave=False) as bar:
        for index, path in enumerate(paths):
            score = None
            for program in programs:
                cached = os.path.join(cache_dir, f"score_{cache_key(path, program, soundfont, sample_rate)}.f32")
                if not os.path.exists(cached):
                    try:
                        score = read_score(path) if score is None else score
                    except ValueError as e:
                        skipped[path] = str(e)
                        break
                    synth = synthesizer(soundfont, programs, sample_rate) if synth is None else synth
                    partial = f"{cached}.{os.getpid()}.tmp"
                    try:
                        audio = render(score, program, synth)
                    except ValueError as e:  # the program's fault, not the score's: no other score would fare better
                        raise SystemExit(f"{e} with {soundfont} (score {path}): leave program {program} out of "
                                         f"--train_programs and --val_programs") from None
                    audio.tofile(partial)
                    os.replace(partial, cached)
                renders[index, program] = np.fromfile(cached, dtype=np.float32)
                bar.update()
    for path, reason in skipped.items():
        log(f"warning: skipping {reason}")
    kept = sorted({index for index, _ in renders})
    if not kept:
        raise SystemExit(f"no usable score among {len(paths)} file(s): {'; '.join(skipped.values())}")
    return {key: audio for key, audio in renders.items() if key[0] in kept}


def programs_of(text, name):
    """'0,40,73' as General MIDI programs; SystemExit naming the hyperparameter otherwise."""
    try:
        programs = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        programs = []
    if len(programs) < 2 or len(set(programs)) != len(programs) or not all(0 <= p < 128 for p in programs):
        raise SystemExit(f"--{name}={text!r}: give at least two different General MIDI programs, 0-127, "
                         f"comma-separated (e.g. 0,40,73)")
    return programs


# -----------------------------------------------------------------------------
# triplets


@dataclass
class ScoresConfig:
    """Where a run's triplets come from; train.py's block sets every field."""
    score_dir: str  # a folder of MIDI/MusicXML files, or "" for music21's Bach chorales
    score_pieces: int  # how many chorales (with score_dir: every file)
    soundfont: str  # a .sf2/.sf3 file, or "" for TimGM6mb
    train_programs: str  # General MIDI programs the training triplets are played with
    val_programs: str  # programs held out for validation: no training triplet uses them
    score_seconds: float  # each rendering's first seconds (0: whole pieces)
    material_seconds: float  # how much of the target's score the pointer heads may play from
    val_fraction: float  # share of pieces held out for validation
    segment_seconds: float
    sample_rate: int
    cache_dir: str
    seed: int


class TripletDataset:
    """(input, target, material, truth) for every segment of every piece: the input is segment k of
    piece S played by A, the truth the same segment played by B; the material is the first
    material_samples of another piece S' played by B, and the target its segment k (mod its length).
    Training redraws A != B and S' every epoch (set_epoch); validation (fixed=True) keeps one draw,
    cycling through every ordered pair of its programs."""

    def __init__(self, renders, paths, pieces, programs, segment_samples, material_samples, seed, fixed=False):
        self.renders, self.paths, self.pieces, self.programs = renders, paths, pieces, programs
        self.segment, self.material, self.seed, self.fixed = segment_samples, material_samples, seed, fixed
        lengths = {piece: min(len(renders[piece, p]) for p in programs) for piece in pieces}
        self.items = [(piece, k) for piece in pieces for k in range(lengths[piece] // segment_samples)]
        assert len(pieces) >= 2 and len(programs) >= 2, "triplet_sets checks this"
        self.set_epoch(0)

    def set_epoch(self, epoch):
        rng = np.random.default_rng([self.seed, 0 if self.fixed else epoch])
        pairs = [(a, b) for a in self.programs for b in self.programs if a != b]
        self.draws = []
        for index, (piece, _) in enumerate(self.items):
            a, b = pairs[index % len(pairs)] if self.fixed else pairs[int(rng.integers(len(pairs)))]
            others = [p for p in self.pieces if p != piece]
            self.draws.append((a, b, others[int(rng.integers(len(others)))]))

    def __len__(self):
        return len(self.items)

    def minutes(self, sample_rate):
        return len(self.items) * self.segment / sample_rate / 60.0

    def __getitem__(self, index):  # -> input, target, material, material length, truth
        (piece, k), (a, b, other) = self.items[index], self.draws[index]
        n = self.segment
        material = self.renders[other, b][: self.material]
        k_target = k % max(len(material) // n, 1)
        target = material[k_target * n : (k_target + 1) * n]
        return (self.renders[piece, a][k * n : (k + 1) * n], np.pad(target, (0, n - len(target))),
                np.pad(material, (0, self.material - len(material))), len(material), self.renders[piece, b][k * n : (k + 1) * n])

    def batch(self, indices):
        inputs, targets, materials, lengths, truths = zip(*(self[i] for i in indices))

        def stack(arrays):
            return torch.from_numpy(np.stack(arrays).astype(np.float32))

        keys = tuple((self.draws[i][2], self.draws[i][1]) for i in indices)  # (target piece, program)
        return Batch(stack(inputs), stack(targets), stack(materials), torch.tensor(lengths), stack(truths), keys)


def triplet_sets(config, log=print):
    """The training and validation triplets of a run: pieces split by val_fraction and programs by
    train_programs / val_programs, so no validation piece or program is heard in training."""
    train_programs = programs_of(config.train_programs, "train_programs")
    val_programs = programs_of(config.val_programs, "val_programs")
    if set(train_programs) & set(val_programs):
        raise SystemExit(f"--train_programs and --val_programs share {sorted(set(train_programs) & set(val_programs))}: "
                         f"validation programs must be held out from training")
    soundfont = config.soundfont or default_soundfont()
    paths = score_files(config.score_dir, config.score_pieces)
    renders = rendered(paths, train_programs + val_programs, soundfont, config.sample_rate, config.cache_dir, log)
    if config.score_seconds > 0:
        renders = {key: audio[: seconds_to_samples(config.score_seconds, config.sample_rate)] for key, audio in renders.items()}
    pieces = sorted({piece for piece, _ in renders})
    order = np.random.default_rng(config.seed).permutation(len(pieces))
    n_val = min(max(2, round(config.val_fraction * len(pieces))), len(pieces) - 2)
    if n_val < 2:
        raise SystemExit(f"{len(pieces)} usable score(s): triplets need two pieces for training and two held out; add scores")
    val_pieces = sorted(pieces[i] for i in order[:n_val])
    train_pieces = sorted(pieces[i] for i in order[n_val:])
    segment = seconds_to_samples(config.segment_seconds, config.sample_rate)
    material = seconds_to_samples(config.material_seconds, config.sample_rate)
    source = config.score_dir or BACH_CHORALES
    log(f"scores: {len(train_pieces)} training and {len(val_pieces)} held-out pieces of {source}; programs "
        f"{train_programs} for training, {val_programs} held out")
    return (TripletDataset(renders, paths, train_pieces, train_programs, segment, material, config.seed),
            TripletDataset(renders, paths, val_pieces, val_programs, segment, material, config.seed, fixed=True))
