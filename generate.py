"""
Turn an input song into a new piece made of a target's audio, with a trained checkpoint.

    python generate.py --ckpt checkpoints/epoch_10_step_270.pth --input song.wav --target other.flac --out out.wav
    python generate.py --ckpt checkpoints/epoch_10_step_270.pth --input song.wav --target ~/samples --out out.flac
    python generate.py ... --midi notes.mid   # also the input's transcription by stage 1, as MIDI

The model is rebuilt from the checkpoint alone. It chooses at its own rate (mono),
window by window over the input, and every window may play grains from anywhere in the
target: a file, or every file of a folder as one corpus. What it chose is played again from
the original audio at the input's rate and channel count (cascade_rms/full_rate.py): 44.1 or 48 kHz
stereo in, the same out, with the input's length; mono stays mono. A peak above full
scale is turned down, never clipped. The result is written to a temporary file and
renamed, so an interrupted run leaves no half-written file behind.
"""

import argparse
import os
import sys
import time

import numpy as np
import soundfile as sf
import torch

from cascade_rms import atomic, checkpointing, data, full_rate, health_report, hyperparameters, notes, target_files, verdict

INTERRUPTED_EXIT = 130  # as train.py's, and the shell's for Ctrl-C
MAX_CHANNELS = 2  # mono or stereo: the replay keeps each channel; more would need a layout to keep


def check_folder(path, flag):
    """SystemExit before any work if the folder a file is to be written in does not exist."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise SystemExit(f"{flag} {path}: the folder {folder} does not exist; create it first")


def output_format(path):
    """libsndfile's name for the format a file name asks for, or SystemExit before any work."""
    check_folder(path, "--out")
    extension = os.path.splitext(path)[1][1:].upper()
    formats = sf.available_formats()
    if extension not in formats:
        raise SystemExit(f"--out {path}: unknown format {extension or '(no extension)'!r}; use one of "
                         f"{', '.join('.' + f.lower() for f in ('WAV', 'FLAC', 'OGG', 'AIFF') if f in formats)}")
    return extension


def input_audio(path, model_rate):
    """The input at the model's rate (mono) and at its own rate and channel count, or SystemExit saying why not."""
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise SystemExit(f"cannot use --input {path}: {e}") from None
    if info.channels > MAX_CHANNELS:
        raise SystemExit(f"--input {path} has {info.channels} channels; generate.py plays mono or stereo: "
                         f"mix it down first (e.g. sox in.wav -c 2 out.wav)")
    if info.samplerate < model_rate:
        raise SystemExit(f"--input {path} is at {info.samplerate} Hz, below the model's {model_rate} Hz: the output, "
                         f"played at the input's rate, could not hold what the model hears; give the song at "
                         f"{model_rate} Hz or more (44.1 or 48 kHz)")
    try:
        return data.read_audio(path, model_rate), data.read_audio(path, info.samplerate, info.channels), info
    except ValueError as e:
        raise SystemExit(f"cannot use --input {e}") from None


def write_output(path, audio, rate, extension):
    """Written whole or not at all (atomic.written): an interrupted or failed write leaves no
    half-written file. # audio: (N, channels)"""
    try:
        with atomic.written(path) as partial:
            sf.write(partial, audio[:, 0] if audio.shape[1] == 1 else audio, rate, format=extension)
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as e:
        raise SystemExit(f"cannot write {path}: {e}") from None


def generate(args):
    began = time.perf_counter()
    extension = output_format(args.out)
    if args.midi:
        check_folder(args.midi, "--midi")
        if not args.midi.lower().endswith((".mid", ".midi")):
            raise SystemExit(f"--midi {args.midi}: name a .mid file")
    try:
        state = checkpointing.load(args.ckpt)
        model = checkpointing.model_from(state).eval()
    except checkpointing.CheckpointError as e:
        raise SystemExit(f"--ckpt: {e}") from None
    config = model.config
    if config.head != "pointer":
        raise SystemExit(f"--ckpt {args.ckpt} has the original design's linear head, which makes no grains to play again: "
                         f"train with --head=pointer")
    if args.midi and not config.notes:
        raise SystemExit(f"--midi: {args.ckpt} does not transcribe (trained with notes=False)")
    rate = config.sample_rate
    in_model, in_full, info = input_audio(args.input, rate)
    target = target_files.TargetFiles(args.target, model, rate, info.samplerate, info.channels, args.cache_dir, in_model)
    generator = full_rate.Generator(model, target, checkpointing.segment_samples(state))
    out, out_model, scales, probabilities = generator.generate(in_model, in_full)
    peak = float(np.abs(out).max())
    if peak > 1.0:  # the health report below judges the output before this
        print(f"output peaked at {peak:.3f}; turned down by {20 * np.log10(peak / 0.999):.1f} dB instead of clipping")
    write_output(args.out, out / max(1.0, peak / 0.999), info.samplerate, extension)

    seconds = len(in_model) / rate
    tgt_model = target.looped(len(in_model))
    clips = (torch.from_numpy(a).view(1, 1, -1) for a in (out_model, in_model, tgt_model))  # (B, 1, N)
    health = {**health_report.generation_health(scales, in_model, tgt_model, out_model, config.rms_floor),
              **{k: v.item() for k, v in health_report.output_health(*clips, config.rms_floor).items()},
              **health_report.judged_health([verdict.blend_metrics(out_model, in_model, tgt_model, rate)],
                                            (in_model, tgt_model, out_model))}
    lines, warnings = health_report.health_lines(health)
    print(f"wrote {args.out}: {len(out) / info.samplerate:.2f} s at {info.samplerate} Hz, {info.channels} channel(s), "
          f"from {args.ckpt} (epoch {state['epoch']}) and {len(target.recordings)} target file(s); "
          f"{len(warnings)} warnings\n" + "\n".join(lines))
    if args.midi:
        transcribed = notes.notes_of(probabilities, config.frame_dim / rate)
        notes.write_midi(args.midi, transcribed)
        print(f"wrote {args.midi}: {len(transcribed)} notes, the input's transcription by stage 1")
    took = time.perf_counter() - began
    print(f"took {took:.1f} s for {seconds:.1f} s of audio, reading and writing included: real-time factor "
          f"{took / seconds:.3f} ({seconds / took:.1f}x faster than real time)")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by train.py")
    parser.add_argument("--input", required=True, help="the input song (any format libsndfile reads), mono or stereo")
    parser.add_argument("--target", required=True, help="the target song, or a folder of them: the corpus")
    parser.add_argument("--out", required=True, help="where to write the result (.wav, .flac, ...)")
    parser.add_argument("--midi", help="also write the input's transcription by stage 1 to this .mid file")
    parser.add_argument("--cache_dir", default=hyperparameters.defaults()["cache_dir"],
                        help="where the target is decoded once, at both rates (train.py's cache_dir by default)")
    args = parser.parse_args(argv)
    try:
        generate(args)
    except KeyboardInterrupt:
        print(f"interrupted: nothing written to {args.out}", file=sys.stderr)
        raise SystemExit(INTERRUPTED_EXIT) from None


if __name__ == "__main__":
    main(sys.argv[1:])
