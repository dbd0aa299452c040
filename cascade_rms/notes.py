"""
What the scores say is played, for stage 1 to learn to transcribe: piano rolls of a score's
notes on the model's frames, short excerpts of a score rendered with any General MIDI program
(cheap enough to draw fresh for every training example: a 2 s excerpt renders in ~2 ms), a
random EQ and gain on them, and frame F1 as the field scores transcription (mir_eval's
multipitch frame metrics pool the same counts).
"""

from dataclasses import dataclass

import numpy as np
import torch

from model import LOWEST_KEY, N_KEYS

from . import atomic

LEAD_SECONDS = 1.0  # an excerpt is rendered from this much earlier, so notes held into it sound as in the piece


def piano_roll(notes, n_frames, hop_seconds, start=0.0):
    """Which of the N_KEYS keys sound at each frame time start + t * hop_seconds: a note sounds
    from its onset up to (not including) its offset. notes: (n, 3) rows (onset, offset, MIDI
    pitch), as note_array makes them. # (n_frames, N_KEYS) bool"""
    roll = np.zeros((n_frames, N_KEYS), dtype=bool)
    times = start + np.arange(n_frames) * hop_seconds
    for onset, offset, pitch in notes:
        key = int(pitch) - LOWEST_KEY
        if 0 <= key < N_KEYS:
            roll[(times >= onset) & (times < offset), key] = True
    return roll


def note_array(score):
    """Every note of a symusic ScoreSecond as rows (onset, offset, MIDI pitch), by onset. # (n, 3)"""
    rows = [(n.time, n.time + n.duration, n.pitch) for track in score.tracks for n in track.notes]
    return np.array(sorted(rows), dtype=np.float64).reshape(-1, 3)


def render_excerpt(renderer, score, program, start, samples):
    """samples of the score from `start` seconds played by one program (a scores.Renderer's), and
    the notes that sound in them (onsets and offsets from the excerpt's start): only notes with an
    onset after start - LEAD_SECONDS are rendered, so a held note sounds exactly when its label
    says. Silent where nothing sounds. -> ((samples,) float32, (n, 3) notes)"""
    rate = renderer.sample_rate
    begin = max(start - LEAD_SECONDS, 0.0)
    clip = renderer.played(score.clip(begin, start + samples / rate, clip_end=False).shift_time(-begin), program)
    notes = note_array(clip)
    notes[:, :2] -= start - begin
    skip = round((start - begin) * rate)
    audio = renderer.synth.play(clip, program, skip + samples)[skip:]
    if not np.isfinite(audio).all():
        raise ValueError(f"program {program} renders non-finite samples with {renderer.soundfont}")
    return audio, notes


@dataclass
class Augment:
    """Random gain and EQ on training excerpts: a tilt over the spectrum and a few bell-shaped
    boosts or cuts, so a timbre's overall colour is never a cue to its notes."""
    gain_db: float = 12.0  # gain uniformly within +-gain_db
    tilt_db: float = 3.0  # tilt within +-tilt_db per octave, around 1 kHz
    bells: int = 3  # bells per excerpt, each within +-bell_db, half an octave to two wide
    bell_db: float = 9.0

    def __call__(self, audio, sample_rate, rng):
        """# (N,) float32 -> (N,) float32"""
        spectrum = np.fft.rfft(audio)
        octaves = np.log2(np.maximum(np.fft.rfftfreq(len(audio), 1.0 / sample_rate), 20.0) / 1000.0)
        db = rng.uniform(-self.gain_db, self.gain_db) + rng.uniform(-self.tilt_db, self.tilt_db) * octaves
        for _ in range(self.bells):
            centre, width = rng.uniform(-4.0, 3.0), rng.uniform(0.5, 2.0)
            db = db + rng.uniform(-self.bell_db, self.bell_db) * np.exp(-0.5 * ((octaves - centre) / (width / 2)) ** 2)
        return np.fft.irfft(spectrum * 10 ** (db / 20), len(audio)).astype(np.float32)


class NoteClips:
    """Training examples for the transcription: an excerpt of a random piece, played by a random
    program, augmented; beside it a target, as the cascade sees one: the next example's excerpt,
    another piece by another program; and the input's piano roll on the model's frames (frame t
    centred on sample t * hop)."""

    def __init__(self, renderer, scores, programs, samples, hop, augment):
        self.renderer, self.scores, self.programs = renderer, scores, programs
        self.samples, self.hop, self.sample_rate, self.augment = samples, hop, renderer.sample_rate, augment
        self.weights = None  # each program's chance to be drawn (focus_weights), or None: every program alike

    def excerpt(self, rng, program=None):
        """(audio, notes) of a random piece from a random time, played by `program` or a drawn one."""
        piece = int(rng.integers(len(self.scores)))
        if program is None:
            drawn = rng.integers(len(self.programs)) if self.weights is None else rng.choice(len(self.programs), p=self.weights)
            program = self.programs[int(drawn)]
        length = self.scores[piece].end() - self.samples / self.sample_rate
        return render_excerpt(self.renderer, self.scores[piece], program, rng.uniform(0.0, max(length, 0.0)), self.samples)

    def example(self, rng, program=None):
        """An excerpt, augmented, and its piano roll on the model's frames. # (N,) float32, (T, N_KEYS) bool"""
        excerpt, notes = self.excerpt(rng, program)
        n_frames = self.samples // self.hop + 1  # as MDCTCodec.encode frames the clip
        return self.augment(excerpt, self.sample_rate, rng), piano_roll(notes, n_frames, self.hop / self.sample_rate)

    def batch(self, size, rng):
        """-> inputs (B, N), targets (B, N) float32 audio, rolls (B, T, N_KEYS) float32"""
        # rendering is most of a batch's cost: each excerpt is an input and a target
        audio, rolls = zip(*(self.example(rng) for _ in range(size + 1)))
        audio = torch.from_numpy(np.stack(audio))
        return audio[:-1], audio[1:], torch.from_numpy(np.stack(rolls[:-1])).float()


@torch.no_grad()
def program_f1(model, codec, clips, per_program, rng, batch_size=32):
    """Stage 1's frame F1 for each of the clips' programs, on `per_program` training excerpts each
    (the clips' pieces, augmented as training augments them), each heard beside another's as its
    target. # {program: F1}"""
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    excerpts = [(program, *clips.example(rng, program)) for program in clips.programs for _ in range(per_program)]
    counts = {program: np.zeros(3, dtype=np.int64) for program in clips.programs}
    for start in range(0, len(excerpts), batch_size):
        chunk = excerpts[start : start + batch_size]
        x = codec.encode(torch.from_numpy(np.stack([audio for _, audio, _ in chunk])).to(device))
        sounding = (model.transcribe(x, x.roll(1, dims=0)) > 0).cpu().numpy()
        for (program, _, roll), predicted in zip(chunk, sounding):
            counts[program] += f1_counts(on_16ms_grid(predicted[None]), on_16ms_grid(roll[None]))
    model.train(was_training)
    return {program: f1(c) for program, c in counts.items()}


def focus_weights(f1_of_program, focus):
    """Each program's chance to be drawn, (1 - its F1) ** focus, normalised: the programs stage 1
    transcribes worst (a 16-foot organ, bells) drawn most. # {program: F1} -> (n_programs,) numpy"""
    misses = np.array([1.0 - value for value in f1_of_program.values()]) + 1e-3  # a perfect program is still drawn
    weights = misses**focus
    return weights / weights.sum()


def on_16ms_grid(frames):
    """Every second frame: the model's 8 ms frames (128 samples at 16 kHz) on the 16 ms grid frame
    F1 is scored on. # (B, T, ...) -> (B, ceil(T / 2), ...)"""
    return frames[:, ::2]


def f1_counts(predicted, truth):
    """True positives, false positives and false negatives over every (frame, key) cell. # bool arrays -> (3,) int"""
    predicted, truth = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
    return np.array([(predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum()])


def f1(counts):
    """Frame F1 of pooled f1_counts: 2 tp / (2 tp + fp + fn), 1 where there is nothing to find nor found."""
    tp, fp, fn = counts
    return 1.0 if tp + fp + fn == 0 else float(2 * tp / (2 * tp + fp + fn))


@torch.no_grad()
def transcription_counts(model, codec, renderer, scores, programs, segment, batch_size=16):
    """Stage 1's transcription of every `segment`-sample excerpt of each score played by each
    program (a scores.Renderer's), from audio alone, against the score: {program: f1_counts on the
    16 ms grid}. Each excerpt's target, which stage 1 also hears, is the same stretch of the next
    score played by the next program, as a held-out triplet's is another piece and instrument."""
    rate, hop = renderer.sample_rate, model.config.frame_dim
    counts = {}
    for p, program in enumerate(programs):
        other = programs[(p + 1) % len(programs)]
        inputs, targets, rolls = [], [], []
        for s, score in enumerate(scores):
            audio = renderer.render(score, program)
            context = renderer.render(scores[(s + 1) % len(scores)], other)
            played = renderer.notes(score, program)
            for k in range(int(score.end() * rate) // segment):
                inputs.append(fitted(audio[k * segment : (k + 1) * segment], segment))
                targets.append(fitted(context[k * segment : (k + 1) * segment], segment))
                rolls.append(piano_roll(played, segment // hop + 1, hop / rate, k * segment / rate))
        counts[program] = np.zeros(3, dtype=np.int64)
        for start in range(0, len(inputs), batch_size):
            x_in, x_tgt = (codec.encode(torch.from_numpy(np.stack(a[start : start + batch_size]))) for a in (inputs, targets))
            sounding = (model.transcribe(x_in, x_tgt) > 0).numpy()
            counts[program] += f1_counts(on_16ms_grid(sounding), on_16ms_grid(np.stack(rolls[start : start + batch_size])))
    return counts


def fitted(audio, n):
    """audio cut or zero-padded to n samples. # (n,)"""
    return np.pad(audio[:n], (0, max(n - len(audio), 0)))


MIN_NOTE_FRAMES = 3  # a transcribed note lasts at least this many frames (24 ms): shorter runs are flicker


def notes_of(probabilities, hop_seconds, threshold=0.5):
    """A transcription's notes: every run of at least MIN_NOTE_FRAMES frames in which a key's
    probability exceeds the threshold. # (T, N_KEYS) -> (n, 3) rows (onset, offset, MIDI pitch)"""
    sounding = np.pad(np.asarray(probabilities) > threshold, ((1, 1), (0, 0)))
    rows = []
    for key in range(sounding.shape[1]):
        edges = np.flatnonzero(np.diff(sounding[:, key].astype(np.int8)))
        for onset, offset in zip(edges[::2], edges[1::2]):
            if offset - onset >= MIN_NOTE_FRAMES:
                rows.append((onset * hop_seconds, offset * hop_seconds, LOWEST_KEY + key))
    return np.array(sorted(rows), dtype=np.float64).reshape(-1, 3)


def write_midi(path, notes, velocity=80):
    """Notes (onset, offset, MIDI pitch) as a one-track piano MIDI file, written whole or not at all."""
    import symusic

    score, track = symusic.Score(ttype="second"), symusic.Track(name="transcription", program=0, ttype="second")
    for onset, offset, pitch in notes:
        track.notes.append(symusic.Note(float(onset), float(offset - onset), int(pitch), velocity, ttype="second"))
    score.tracks.append(track)
    with atomic.written(path, suffix=".mid") as partial:
        score.dump_midi(partial)
