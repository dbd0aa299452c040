"""cascade_rms/scores.py: scores rendered with two instruments, triplets with a right answer, held-out
pieces and programs, the user's own scores and SoundFont, and the refusals."""

import os
import shlex
import shutil
import struct
import subprocess

import numpy as np
import pytest

from helpers import (
    README_SCORES,
    ROOT,
    TINY_SCORES,
    in_process,
    readme_commands,
    sha1,
    tiny_train,
    write_scores,
)
from cascade_rms import quality, scores, soundfont

RATE = 16000


def chorales(n):
    return scores.score_files("", n)


def tiny_config(tmp_path, **overrides):
    values = dict(score_dir="", score_pieces=5, soundfont="", train_programs="0,40,71", val_programs="42,73",
                  val_pieces=2, score_seconds=4.0, material_seconds=2.0, epoch_triplets=0, segment_seconds=0.5,
                  sample_rate=8000, frame_dim=16, cache_dir=str(tmp_path / "cache"), seed=0)
    return scores.ScoresConfig(**{**values, **overrides})


def test_two_programs_play_the_same_notes_with_other_sounds_and_scores_are_parsed_once(tmp_path):
    """The ground truth's premise: one score with two instruments has the same onsets and other
    timbre; every render sits at one level; a second read takes the parsed score from the cache."""
    pieces = scores.read_pieces(chorales(1), 0, str(tmp_path))
    renderer = scores.Renderer(scores.default_soundfont(), [0, 42], {60}, RATE)
    piano, cello = (renderer.render(pieces[0][1], p) for p in (0, 42))
    assert abs(len(piano) - len(cello)) < RATE and len(piano) > 10 * RATE
    for audio in (piano, cello):
        assert np.sqrt(np.mean(audio**2)) == pytest.approx(scores.RENDER_RMS, rel=1e-3)
    n = min(len(piano), len(cello), 8 * RATE)
    heard = [quality.features(a[:n], RATE) for a in (piano, cello)]
    assert quality.onset_f_measure(heard[1], heard[0]) > 0.6  # the same notes start together
    assert quality.frechet_distance(heard[0], heard[1]) > 100 * max(quality.frechet_distance(heard[0], heard[0]), 1e-3)
    stamps = {name: os.stat(tmp_path / name).st_mtime_ns for name in os.listdir(tmp_path)}
    again = scores.read_pieces(chorales(1), 0, str(tmp_path))
    assert {name: os.stat(tmp_path / name).st_mtime_ns for name in os.listdir(tmp_path)} == stamps
    assert np.array_equal(renderer.render(again[0][1], 0), piano)


def test_every_program_plays_the_written_notes_in_tune():
    """Each program's strongest partial lies at a whole multiple of the written key's frequency.
    symusic's synthesizer, used before, played TimGM6mb's piano key 60 at 832 Hz (3.2 times C4)
    and its cello 2 semitones flat: every label was wrong for most programs."""
    from lab import tuning  # it counts the programs in tune by this criterion
    renderer = scores.Renderer(scores.default_soundfont(), [0, 40, 42, 73], {48, 60}, RATE)
    for program in (0, 40, 42, 73):
        for key in (48, 60):
            audio = renderer.render(soundfont.one_note(key, 1.5), program)[RATE // 10 : RATE // 10 + RATE]
            assert tuning.strongest_partial_cents(audio, key, RATE) < 30, (program, key)


def test_notes_a_soundfont_cannot_play_are_found_and_left_out():
    """TimGM6mb's oboe (68) has no sound below key 36: the renderer finds it and leaves those notes
    out, audio and labels alike; a program with no sound for any of the scores' keys is unusable."""
    import symusic
    score, track = symusic.Score(ttype="second"), symusic.Track(ttype="second")
    for key in (30, 60):
        track.notes.append(symusic.Note(0.0, 0.5, key, 90, ttype="second"))
    score.tracks.append(track)
    renderer = scores.Renderer(scores.default_soundfont(), [0, 68], {30, 60}, RATE)
    assert renderer.broken == {68: {30}} and renderer.unusable == []
    assert renderer.notes(score, 68)[:, 2].tolist() == [60] and renderer.notes(score, 0)[:, 2].tolist() == [30, 60]
    assert np.isfinite(renderer.render(score, 68)).all()
    assert scores.Renderer(scores.default_soundfont(), [0, 68], {30, 32}, RATE).unusable == [68]


def test_triplets_hold_out_pieces_and_programs_and_the_truth_is_the_inputs_score(tmp_path):
    train, val = scores.triplet_sets(tiny_config(tmp_path), log=lambda *_: None)
    assert not set(train.paths) & set(val.paths) and len(val.pieces) == 2
    for dataset, programs in ((train, {0, 40, 71}), (val, {42, 73})):
        for (piece, k), (a, b, other) in zip(dataset.items, dataset.draws):
            assert a != b and {a, b} <= programs and other != piece and other in dataset.pieces
    assert {(a, b) for a, b, _ in val.draws} == {(42, 73), (73, 42)}  # validation cycles through every ordered pair
    for index in (0, len(train) // 2, len(train) - 1):
        x_in, x_tgt, material, length, truth = train[index]
        (piece, k), (a, b, other) = train.items[index], train.draws[index]
        n = train.segment
        (input_audio, input_notes), (truth_audio, truth_notes) = train.excerpt(piece, a, k), train.excerpt(piece, b, k)
        assert np.array_equal(x_in, input_audio) and np.array_equal(truth, truth_audio) and len(x_in) == n
        assert np.array_equal(truth_notes, input_notes) and len(input_notes)  # the input's excerpt, B's sounds
        assert np.sqrt(np.mean(x_in**2)) == pytest.approx(scores.RENDER_RMS, rel=1e-3)  # input and truth at one level
        whole = train.renderer.render(train.scores[piece], a)[k * n : (k + 1) * n]
        assert np.corrcoef(x_in, whole)[0, 1] > 0.9  # the piece's own segment, rendered alone
        assert np.array_equal(material[:length], train.material_of(other, b)) and length <= train.material
        assert any(np.array_equal(x_tgt, material[j : j + n]) for j in range(0, length - n + 1, n))
    batch = train.batch([0, 1])
    assert batch.materials.shape == (2, train.material) and batch.truths.shape == batch.inputs.shape
    assert batch.rolls.shape == (2, train.segment // 16 + 1, 88) and batch.rolls.sum() > 0  # the inputs' notes
    train.set_epoch(1)
    assert train.draws != scores.triplet_sets(tiny_config(tmp_path), log=lambda *_: None)[0].draws  # redrawn each epoch


def patched_soundfont(path, program, to):
    """A copy of TimGM6mb whose preset `program` is renumbered `to`: a SoundFont lacking it."""
    data = bytearray(open(scores.default_soundfont(), "rb").read())
    at = data.find(b"phdr")
    size = struct.unpack_from("<I", data, at + 4)[0]
    for offset in range(at + 8, at + 8 + size - 38, 38):
        preset, bank = struct.unpack_from("<HH", data, offset + 20)
        if (preset, bank) == (program, 0):
            struct.pack_into("<H", data, offset + 20, to)
    path.write_bytes(bytes(data))
    return path


def test_bad_scores_soundfonts_and_programs_are_refused_naming_them(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a score")
    silent = tmp_path / "silent"
    silent.mkdir()
    import music21
    rest_only = music21.stream.Stream([music21.note.Rest(quarterLength=4)])
    rest_only.write("midi", fp=str(silent / "rests.mid"))
    garbage = tmp_path / "garbage.sf2"
    garbage.write_bytes(b"RIFF" + bytes(100))
    lacking = patched_soundfont(tmp_path / "lacking.sf2", 73, 0)
    cases = [([f"--score_dir={empty}"], ["holds no score", str(empty)]),
             ([f"--score_dir={silent}"], ["no usable score", "rests.mid", "holds no notes"]),
             ([f"--soundfont={garbage}"], [str(garbage), "not a SoundFont"]),
             ([f"--soundfont={lacking}"], [str(lacking), "lacks General MIDI program(s) [73]"]),
             (["--train_programs=0,40", "--val_programs=40,73"], ["share [40]", "held out"]),
             (["--val_programs=73"], ["--val_programs='73'", "at least two"])]
    for args, messages in cases:
        result = in_process("train", tiny_train(tmp_path / "run", *TINY_SCORES, f"--cache_dir={tmp_path / 'c'}", *args)[1:],
                            capsys)
        assert result.returncode != 0 and all(m in result.stderr for m in messages), (args, result.stderr)
        assert not os.path.exists(tmp_path / "run") or not any(n.endswith(".pth") for n in os.listdir(tmp_path / "run"))


def test_a_folder_of_midi_and_musicxml_trains_with_a_soundfont_of_choice(tmp_path):
    """The README's command for the user's own scores (MIDI and MusicXML, one without notes among
    them, skipped with a warning) and SoundFont; their files are only ever read."""
    files = write_scores(tmp_path / "scores", 4, start=20)
    import music21
    music21.stream.Stream([music21.note.Rest(quarterLength=4)]).write("midi", fp=str(tmp_path / "scores" / "rests.mid"))
    soundfont = tmp_path / "mine.sf2"
    shutil.copy(scores.default_soundfont(), soundfont)
    before = {p: sha1(p) for p in files + [str(soundfont)]}
    assert README_SCORES in readme_commands(), "the README no longer shows its scores command: tests/test_readme.py runs it"
    places = {"~/scores": str(tmp_path / "scores"), "~/soundfonts/mine.sf2": str(soundfont)}
    words = [w.split("=")[0] + "=" + places[w.split("=")[1]] if "=" in w else w for w in shlex.split(README_SCORES)]
    result = subprocess.run([*words, *tiny_train(tmp_path / "run", *TINY_SCORES)[1:], f"--cache_dir={tmp_path / 'cache'}",
                             "--train_programs=0,40", "--val_programs=42,73", "--epochs=2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"warning: skipping {tmp_path / 'scores' / 'rests.mid'}: the score holds no notes" in result.stdout
    assert "train: 2 pieces" in result.stdout and "val: 2 pieces" in result.stdout and "step 1/" in result.stdout
    # a transcription epoch (the note term alone), then a cascade epoch with the note term beside the pointer's
    assert "| epoch 1 | loss" in result.stdout and " (notes " in result.stdout.split("| epoch 1 |")[1].split("\n")[0]
    assert ", notes " in result.stdout.split("| epoch 2 |")[1].split("\n")[0]
    assert result.stdout.count("transcription    frame F1") == 2
    assert {p: sha1(p) for p in before} == before
