"""
SoundFont synthesis: a score played offline by one General MIDI program, with TinySoundFont
(the tinysoundfont package). symusic's own synthesizer, which this project used before, plays
most programs out of tune (TimGM6mb's piano sounds key 60 as G#5, 20 semitones sharp; the
cello 2 semitones flat: docs/LOG.md), hangs on some notes and renders NaN on others;
TinySoundFont plays every program in tune and never hangs.
"""

import importlib.util
import os
import struct

import numpy as np

RELEASE_SECONDS = 1.0  # a whole score's render goes on this long after its last note ends
SILENT_RMS = 1e-6  # a render quieter than this (-120 dBFS) plays nothing
QUIET_SECONDS = 0.05  # what TinySoundFont takes to silence its voices on 'all sounds off'
CHANNELS = 16  # a synthesizer's MIDI channels: each track of a score plays on its own, so unisons sound twice


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


def one_note(key, seconds, program=0):
    """A symusic ScoreSecond of one note: `key` from time 0 for `seconds`, at velocity 90."""
    import symusic

    score, track = symusic.Score(ttype="second"), symusic.Track(program=program, ttype="second")
    track.notes.append(symusic.Note(0.0, seconds, int(key), 90, ttype="second"))
    score.tracks.append(track)
    return score


class Synthesizer:
    """One SoundFont loaded for General MIDI programs, at one sample rate; SystemExit naming the
    file, or the programs it lacks, where it cannot play them."""

    def __init__(self, path, programs, sample_rate):
        try:
            missing = sorted(set(programs) - soundfont_programs(path))
        except ValueError as e:
            raise SystemExit(f"--{e}; give --soundfont a .sf2 or .sf3 file") from None
        if missing:
            raise SystemExit(f"--soundfont {path} lacks General MIDI program(s) {missing}: choose programs it "
                             f"holds (--train_programs, --val_programs) or another SoundFont")
        try:
            import tinysoundfont
        except ImportError:
            raise SystemExit("rendering scores needs tinysoundfont: pip install --no-deps -r requirements-synth.txt") from None
        self.sample_rate = sample_rate
        self.synth = tinysoundfont.Synth(samplerate=sample_rate)
        try:
            self.font = self.synth.sfload(path)
        except Exception as e:  # tinysoundfont raises its own error type for a file it cannot parse
            raise SystemExit(f"--soundfont {path} does not load: {e}") from None

    def play(self, score, program, samples=None):
        """A symusic ScoreSecond played by `program`, mono, for `samples` samples (by default until
        RELEASE_SECONDS after its last note). # (samples,) float32"""
        rate, events = self.sample_rate, []
        for channel, track in enumerate(score.tracks):
            channel %= CHANNELS
            for note in track.notes:
                if note.velocity > 0:
                    events.append((round(note.time * rate), 1, channel, note.pitch, note.velocity))
                    events.append((round((note.time + note.duration) * rate), 0, channel, note.pitch, 0))
        events.sort()  # by time, and at one time a note's end before the next note's start
        if samples is None:
            samples = max((time for time, *_ in events), default=0) + round(RELEASE_SECONDS * rate)
        self.synth.sounds_off()  # nothing of the previous render carries over: its voices end within a few ms,
        self.synth.generate(round(QUIET_SECONDS * rate))  # played into the void
        for channel in range(min(len(score.tracks), CHANNELS)):
            self.synth.program_select(channel, self.font, 0, program)
        chunks, done = [], 0
        for time, starts, channel, key, velocity in events:
            if time >= samples:
                break
            if time > done:
                chunks.append(np.frombuffer(self.synth.generate(time - done), dtype=np.float32))
                done = time
            if starts:
                self.synth.noteon(channel, key, velocity)
            else:
                self.synth.noteoff(channel, key)
        if samples > done:
            chunks.append(np.frombuffer(self.synth.generate(samples - done), dtype=np.float32))
        stereo = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return stereo.reshape(-1, 2).mean(axis=1)

    def silent_keys(self, programs, keys):
        """{program: the keys among `keys` it plays as silence or non-finite samples}: where the
        SoundFont has no sample for them (TimGM6mb's oboe, 68, below key 36)."""
        silent = {}
        for program in programs:
            for key in sorted(keys):
                audio = self.play(one_note(key, 0.25), program, round(0.25 * self.sample_rate))
                level = np.sqrt(np.mean(audio.astype(np.float64) ** 2))
                if not level >= SILENT_RMS:  # NaN too
                    silent.setdefault(program, set()).add(int(key))
        return silent

