"""generate.py: every shape of input a user meets, the health report, refusals and Ctrl-C."""

import os
import subprocess

import numpy as np
import pytest
import torch

from helpers import (
    ROOT,
    generate_command,
    in_process,
)
from cascade_rms import data


def test_generate_keeps_the_input_length_and_fails_clearly_on_bad_checkpoints(tmp_path, tiny_checkpoint, capsys):
    import soundfile as sf
    ckpt = tiny_checkpoint
    n = int(2.5 * 0.25 * 44100)  # 2.5 segments, at another rate than the model's
    sf.write(tmp_path / "in.wav", np.stack([data.demo_piece(1, n / 44100, 44100)] * 2, axis=1), 44100)
    sf.write(tmp_path / "tgt.flac", data.demo_piece(2, 0.4, 22050), 22050)
    generate = generate_command(tmp_path, ckpt, tmp_path / "in.wav", tmp_path / "tgt.flac", tmp_path / "out.wav")[2:]
    result = in_process("generate", [*generate, f"--midi={tmp_path / 'notes.mid'}"], capsys)
    assert result.returncode == 0, result.stderr
    import pretty_midi  # the transcription, as MIDI that another library reads back
    written = int(result.stdout.split(f"wrote {tmp_path / 'notes.mid'}: ")[1].split(" notes")[0])
    assert sum(len(i.notes) for i in pretty_midi.PrettyMIDI(str(tmp_path / "notes.mid")).instruments) == written
    out, rate = sf.read(tmp_path / "out.wav")
    assert rate == 44100 and out.shape == (n, 2) and np.abs(out).max() <= 1.0  # the input's rate, channels and length
    assert "correlation output->input" in result.stdout and "blend verdict    " in result.stdout
    assert "level rule" in result.stdout and "real-time factor" in result.stdout
    assert "generating: 100%" in result.stderr and "decoding the target" in result.stderr  # the progress bars
    generate = generate[2:]  # without --ckpt

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(open(ckpt, "rb").read()[:5000])
    foreign = tmp_path / "foreign.pth"
    torch.save({"weights": torch.zeros(3)}, foreign)
    for bad, message in ((tmp_path / "missing.pth", "no such file"), (truncated, "not a readable checkpoint"),
                         (foreign, "not a checkpoint of this project")):
        # both scripts read checkpoints through checkpointing.load: evaluate.py once is enough
        for script, argv in [("generate", generate + ["--ckpt", str(bad)])] + [("evaluate", ["--ckpt", str(bad)])] * (bad == truncated):
            result = in_process(script, argv, capsys)
            assert result.returncode != 0 and str(bad) in result.stderr and message in result.stderr, result.stderr


def write_song(path, seconds, rate, channels, seed):
    """A demo song at any rate and channel count (stereo: the right channel 10 ms late, quieter)."""
    import soundfile as sf
    mono = data.demo_piece(seed, seconds, rate)
    audio = mono if channels == 1 else np.stack([mono, 0.8 * np.roll(mono, rate // 100)], axis=1)
    sf.write(path, audio, rate)
    return len(mono)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [8000, 44100, 48000])  # the tiny model's own rate, and the two a user has
@pytest.mark.parametrize("target", ["file", "folder"])
def test_the_output_has_the_inputs_rate_channels_and_length(tmp_path, tiny_checkpoint, capsys, channels, rate, target):
    """Every input a user meets: mono or stereo, at the model's rate or above, against a target
    file or folder (of files at other rates and channel counts)."""
    import soundfile as sf
    n = write_song(tmp_path / "in.wav", 0.7, rate, channels, seed=1)
    (tmp_path / "folder").mkdir()
    write_song(tmp_path / "folder" / "a.flac", 0.5, 22050, 2, seed=2)
    write_song(tmp_path / "folder" / "b.wav", 0.6, 8000, 1, seed=3)
    tgt = tmp_path / "folder" if target == "folder" else tmp_path / "folder" / "a.flac"
    result = in_process("generate", generate_command(tmp_path, tiny_checkpoint, tmp_path / "in.wav", tgt,
                                                     tmp_path / "out.wav")[2:], capsys)
    assert result.returncode == 0, result.stderr
    out, out_rate = sf.read(tmp_path / "out.wav", always_2d=True)
    assert (out_rate, out.shape) == (rate, (n, channels)) and np.isfinite(out).all() and np.abs(out).max() > 0


@pytest.mark.parametrize("channels", [1, 2])
def test_an_input_shorter_than_one_window_keeps_its_length(tmp_path, tiny_checkpoint, capsys, channels):
    import soundfile as sf
    n = write_song(tmp_path / "in.wav", 0.05, 44100, channels, seed=1)  # the tiny model's window is 0.128 s
    write_song(tmp_path / "tgt.wav", 1.0, 44100, 2, seed=2)
    result = in_process("generate", generate_command(tmp_path, tiny_checkpoint, tmp_path / "in.wav", tmp_path / "tgt.wav",
                                                     tmp_path / "out.flac")[2:], capsys)
    assert result.returncode == 0, result.stderr
    out, rate = sf.read(tmp_path / "out.flac", always_2d=True)
    assert (rate, out.shape) == (44100, (n, channels))


def test_generate_refuses_bad_input_and_an_interrupt_leaves_no_file(tmp_path, tiny_checkpoint):
    import signal

    import soundfile as sf
    song = data.demo_piece(1, 1.0, 44100)
    sf.write(tmp_path / "in.wav", song, 44100)
    sf.write(tmp_path / "low.wav", data.demo_piece(1, 1.0, 4000), 4000)  # below the tiny model's 8 kHz
    sf.write(tmp_path / "six.wav", np.stack([song] * 6, axis=1), 44100)
    (tmp_path / "empty_corpus").mkdir()
    (tmp_path / "empty_corpus" / "notes.txt").write_text("not audio")
    cases = [("in.wav", "empty_corpus", "out.wav", ["no usable audio", "empty_corpus"]),
             ("low.wav", "in.wav", "out.wav", ["4000 Hz", "below the model's 8000 Hz"]),
             ("six.wav", "in.wav", "out.wav", ["6 channels", "mono or stereo"]),
             ("in.wav", "in.wav", "missing/out.wav", ["does not exist", "missing"])]
    import generate
    for input_name, target, out, messages in cases:  # in this process: SystemExit carries the message (exit status 1)
        with pytest.raises(SystemExit) as refused:
            generate.main(generate_command(tmp_path, tiny_checkpoint, tmp_path / input_name, tmp_path / target,
                                           tmp_path / out)[2:])
        assert all(m in str(refused.value.code) for m in messages), (input_name, refused.value.code)
        assert not os.path.exists(tmp_path / out)
    for midi, message in (("missing/notes.mid", "--midi"), ("notes.txt", "name a .mid file")):  # refused before any work
        with pytest.raises(SystemExit, match=message):
            generate.main([*generate_command(tmp_path, tiny_checkpoint, tmp_path / "in.wav", tmp_path / "in.wav",
                                             tmp_path / "out.wav")[2:], f"--midi={tmp_path / midi}"])
        assert not os.path.exists(tmp_path / "out.wav")
    sf.write(tmp_path / "long.wav", np.stack([data.demo_piece(2, 60.0, 44100)] * 2, axis=1), 44100)
    command = generate_command(tmp_path, tiny_checkpoint, tmp_path / "long.wav", tmp_path / "in.wav", tmp_path / "o.flac")
    # Ctrl-C as a terminal delivers it: a suite started as a background job ignores SIGINT, and its children inherit that
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = ""
    while "generating:" not in seen:
        seen += process.stderr.read(1)
        assert process.poll() is None, seen
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted: nothing written to" in stderr, stderr
    assert sorted(os.listdir(tmp_path)) == sorted(["in.wav", "low.wav", "six.wav", "empty_corpus", "cache", "long.wav"])
