"""
Data with a right answer: scores rendered with General MIDI instruments.

Render one score S with instrument A and with instrument B, and another score S' with B:

    input          S played by A
    target         S' played by B: the clip the transformers see, inside the material
    material       the first material_seconds of S' played by B: what the pointer heads play
    ground truth   S played by B, the input's excerpt: the input's music with the target's sounds

This is how music style transfer is evaluated (Cifka et al., ICASSP 2021). Scores are MIDI or
MusicXML files, or Bach chorales that ship in music21's wheel, played with a
SoundFont (soundfont.py), pretty_midi's General MIDI SoundFont (TimGM6mb, in its wheel) by
default. Parsed scores are cached as MIDI; audio is rendered in memory when first
needed (faster than reading it back), so a run is offline and pays for parsing once. The score's
notes are the labels of stage 1's transcription (notes.py).
"""

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from . import atomic
from .data import Batch, file_key, seconds_to_samples
from .notes import fitted, note_array, piano_roll, render_excerpt
from .soundfont import RELEASE_SECONDS, SILENT_RMS, Synthesizer, default_soundfont

SCORE_SUFFIXES = (".mid", ".midi", ".mxl", ".musicxml", ".xml")
RENDER_RMS = 0.05  # every render at this RMS (-26 dBFS): input, material and truth share a level
BACH_CHORALES = "music21's Bach chorales"
MELODIC_PROGRAMS = range(112)  # General MIDI's pitched programs: 112-127 are percussion and sound effects


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


def read_pieces(paths, seconds, cache_dir, log=print):
    """Every readable score of paths, in seconds, cut to its first `seconds` (0: whole): [(path,
    ScoreSecond)]. Each is parsed once and cached as MIDI (music21 takes ~0.25 s per chorale); a
    score that cannot be read or has no notes is skipped with one warning line; SystemExit if none
    is left."""
    import symusic

    os.makedirs(cache_dir, exist_ok=True)
    pieces, skipped = [], []
    for path in tqdm(paths, desc="reading scores", unit="score", leave=False):
        cached = os.path.join(cache_dir, f"score_{file_key(path)}.mid")
        if not os.path.exists(cached):
            try:
                score = read_score(path)
            except ValueError as e:
                skipped.append(str(e))
                continue
            with atomic.written(cached, suffix=".mid") as partial:
                score.dump_midi(partial)
        score = symusic.Score(cached).to("second")
        pieces.append((path, score.clip(0.0, seconds, clip_end=False) if seconds > 0 else score))
    for reason in skipped:
        log(f"warning: skipping {reason}")
    if not pieces:
        raise SystemExit(f"no usable score among {len(paths)} file(s): {'; '.join(skipped)}")
    return pieces


class Renderer:
    """Scores played with General MIDI programs of one SoundFont, in memory (a 30 s render takes
    ~70 ms, about what reading it from disk would). Checked on creation: the SoundFont holds every
    program, and which of the scores' keys each program cannot play (soundfont.Synthesizer's
    silent_keys) is known: those notes are left out of every render and piano roll. A program
    that plays none of the keys is unusable."""

    def __init__(self, soundfont, programs, keys, sample_rate):
        self.soundfont, self.sample_rate = soundfont, sample_rate
        self.synth = Synthesizer(soundfont, programs, sample_rate)
        silent = self.synth.silent_keys(programs, keys)
        self.unusable = sorted(p for p, dropped in silent.items() if len(dropped) == len(set(keys)))
        self.broken = {p: dropped for p, dropped in silent.items() if p not in self.unusable}  # program: the keys left out

    def played(self, score, program):
        """The score with every part played by one program, and without the notes it has no sound for."""
        score, dropped = score.copy(), self.broken.get(program, set())
        for track in score.tracks:
            track.program, track.is_drum = program, False
            if dropped:
                track.notes = track.notes.filter(lambda note: note.pitch not in dropped)
        return score

    def render(self, score, program, seconds=None):
        """The score's first `seconds` (the whole score by default) played by one program, mono, at
        RENDER_RMS; ValueError if it renders silence or non-finite samples. # (N,)"""
        whole = round((score.end() + RELEASE_SECONDS) * self.sample_rate)
        samples = whole if seconds is None else min(round(seconds * self.sample_rate), whole)
        audio = self.synth.play(self.played(score, program), program, samples)
        level = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
        if not np.isfinite(level) or level < SILENT_RMS:
            raise ValueError(f"program {program} renders {'non-finite samples' if not np.isfinite(level) else 'silence'}")
        return audio * (RENDER_RMS / level)

    def notes(self, score, program):
        """The notes of the score that the program plays (onset, offset, MIDI pitch). # (n, 3)"""
        return note_array(self.played(score, program))


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
    """Where a run's triplets come from; train.py's block sets every field (hyperparameters.section)."""
    score_dir: str  # a folder of MIDI/MusicXML files, or "" for music21's Bach chorales
    score_pieces: int  # how many chorales (with score_dir: every file)
    soundfont: str  # a .sf2/.sf3 file, or "" for TimGM6mb
    train_programs: str  # General MIDI programs the training triplets are played with ("melodic": 0-111 less val_programs)
    val_programs: str  # programs held out for validation: no training triplet uses them
    val_pieces: int  # pieces held out for validation
    score_seconds: float  # each piece's first seconds (0: whole pieces)
    material_seconds: float  # how much of the target's score the pointer heads may play from
    epoch_triplets: int  # training triplets drawn afresh each epoch (0: every segment of every piece)
    segment_seconds: float
    sample_rate: int
    frame_dim: int  # the model's hop: piano rolls are on its frames
    cache_dir: str
    seed: int


class TripletDataset:
    """(input, target, material, truth) for segments of pieces: the input is segment k of piece S
    played by A, the truth the same segment played by B; the material is the first
    material_samples of another piece S' played by B, and the target its segment k (mod its length).
    Training redraws A != B and S' every epoch (set_epoch), and with per_epoch > 0 which segments;
    validation (fixed=True) keeps one draw, cycling through every ordered pair of its programs.
    Renders are made when a batch first needs them (a scores.Renderer's) and kept for the epoch:
    input and truth as their segment alone, each at RENDER_RMS, the material as its piece's start."""

    def __init__(self, renderer, pieces, programs, segment_samples, material_samples, hop, seed, fixed=False,
                 per_epoch=0):
        self.renderer, self.paths, self.scores = renderer, [path for path, _ in pieces], [score for _, score in pieces]
        self.pieces, self.programs = list(range(len(pieces))), programs
        self.segment, self.material, self.hop, self.seed = segment_samples, material_samples, hop, seed
        self.fixed, self.per_epoch, self.renders = fixed, per_epoch, {}
        rate = renderer.sample_rate
        self.every_item = [(piece, k) for piece in self.pieces
                           for k in range(int(self.scores[piece].end() * rate) // segment_samples)]
        assert len(pieces) >= 2 and len(programs) >= 2, "triplet_sets checks this"
        self.set_epoch(0)

    def set_epoch(self, epoch):
        rng = np.random.default_rng([self.seed, 0 if self.fixed else epoch])
        self.items = self.every_item
        if not self.fixed:
            self.renders = {}  # an epoch's draws are mostly not the last one's: keep one epoch's renders at most
        if self.per_epoch and not self.fixed:
            chosen = rng.permutation(len(self.every_item))[: self.per_epoch]
            self.items = [self.every_item[i] for i in sorted(chosen)]
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

    def excerpt(self, piece, program, k):
        """Segment k of the piece played by the program, at RENDER_RMS (silent where nothing
        sounds), and the notes that sound in it (notes.render_excerpt: a segment renders in a
        few ms where its whole piece took up to 0.3 s). # (segment,), (n, 3)"""
        if (piece, program, k) not in self.renders:
            audio, played = render_excerpt(self.renderer, self.scores[piece], program, k * self.segment / self.renderer.sample_rate,
                                           self.segment)
            level = np.sqrt(np.mean(audio.astype(np.float64) ** 2))
            self.renders[piece, program, k] = (audio * (RENDER_RMS / level) if level >= SILENT_RMS else audio, played)
        return self.renders[piece, program, k]

    def material_of(self, piece, program):
        """The first material_samples of the piece (less if it is shorter) played by the program. # (N,)"""
        if (piece, program) not in self.renders:
            self.renders[piece, program] = self.renderer.render(self.scores[piece], program,
                                                                self.material / self.renderer.sample_rate)
        return self.renders[piece, program]

    def roll(self, index):
        """The input's piano roll on the model's frames. # (T, N_KEYS) bool"""
        (piece, k), (a, _, _) = self.items[index], self.draws[index]
        played = self.excerpt(piece, a, k)[1]
        return piano_roll(played, self.segment // self.hop + 1, self.hop / self.renderer.sample_rate)

    def material_roll(self, index):
        """The material's piano roll on the model's frames. # (material_samples // hop + 1, N_KEYS) bool"""
        _, b, other = self.draws[index]
        return piano_roll(self.renderer.notes(self.scores[other], b), self.material // self.hop + 1,
                          self.hop / self.renderer.sample_rate)

    def __getitem__(self, index):  # -> input, target, material, material length, truth
        (piece, k), (a, b, other) = self.items[index], self.draws[index]
        n = self.segment
        material = self.material_of(other, b)
        k_target = k % max(len(material) // n, 1)
        return (self.excerpt(piece, a, k)[0], fitted(material[k_target * n :], n), fitted(material, self.material),
                len(material), self.excerpt(piece, b, k)[0])

    def batch(self, indices):
        inputs, targets, materials, lengths, truths = zip(*(self[i] for i in indices))

        def stack(arrays):
            return torch.from_numpy(np.stack(arrays).astype(np.float32))

        keys = tuple((self.draws[i][2], self.draws[i][1]) for i in indices)  # (target piece, program)
        return Batch(stack(inputs), stack(targets), stack(materials), torch.tensor(lengths), stack(truths), keys,
                     stack([self.roll(i) for i in indices]), stack([self.material_roll(i) for i in indices]))


def triplet_sets(config, log=print):
    """The training and validation triplets of a run, the renderer and the training pieces: pieces
    split by val_pieces and programs by train_programs / val_programs, so no validation piece or
    program is heard in training."""
    val_programs = programs_of(config.val_programs, "val_programs")
    train_programs = (programs_of(config.train_programs, "train_programs") if config.train_programs != "melodic"
                      else [p for p in MELODIC_PROGRAMS if p not in val_programs])
    if set(train_programs) & set(val_programs):
        raise SystemExit(f"--train_programs and --val_programs share {sorted(set(train_programs) & set(val_programs))}: "
                         f"validation programs must be held out from training")
    soundfont = config.soundfont or default_soundfont()
    paths = score_files(config.score_dir, config.score_pieces)
    pieces = read_pieces(paths, config.score_seconds, config.cache_dir, log)
    if len(pieces) < config.val_pieces + 2 or config.val_pieces < 2:
        raise SystemExit(f"{len(pieces)} usable score(s) for --val_pieces={config.val_pieces}: triplets need at least "
                         f"two pieces held out and two for training; add scores or change val_pieces")
    keys = {int(key) for _, score in pieces for key in note_array(score)[:, 2]}
    renderer = Renderer(soundfont, train_programs + val_programs, keys, config.sample_rate)
    if renderer.unusable and (config.train_programs != "melodic" or set(renderer.unusable) & set(val_programs)):
        raise SystemExit(f"program(s) {renderer.unusable} of {soundfont} play none of the scores' notes: leave "
                         f"them out of --train_programs and --val_programs")
    train_programs = [p for p in train_programs if p not in renderer.unusable]
    order = np.random.default_rng(config.seed).permutation(len(pieces))
    val_pieces = [pieces[i] for i in sorted(order[: config.val_pieces])]
    train_pieces = [pieces[i] for i in sorted(order[config.val_pieces :])]
    segment = seconds_to_samples(config.segment_seconds, config.sample_rate)
    material = seconds_to_samples(config.material_seconds, config.sample_rate)
    source = config.score_dir or BACH_CHORALES
    if renderer.unusable:
        log(f"programs {renderer.unusable} left out of training: {os.path.basename(soundfont)} plays none of the "
            f"scores' notes with them")
    log(f"scores: {len(train_pieces)} training and {len(val_pieces)} held-out pieces of {source} (held out: "
        f"{', '.join(os.path.basename(path) for path, _ in val_pieces)}); {len(train_programs)} programs for "
        f"training, {val_programs} held out; {soundfont}")
    if renderer.broken:
        log(f"notes left out of every render, since {os.path.basename(soundfont)} has no sound for them: "
            + "; ".join(f"program {p} keys {sorted(k)}" for p, k in sorted(renderer.broken.items())))
    train = TripletDataset(renderer, train_pieces, train_programs, segment, material, config.frame_dim, config.seed,
                           per_epoch=config.epoch_triplets)
    val = TripletDataset(renderer, val_pieces, val_programs, segment, material, config.frame_dim, config.seed, fixed=True)
    return train, val
