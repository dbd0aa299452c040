"""
Turn an input clip and a target clip into a new one with a trained checkpoint.

    python generate.py --ckpt checkpoints/epoch_10_step_270.pth --input a.wav --target b.wav --out out.wav

The model is rebuilt from the checkpoint alone. Any format, rate, channel count
and length that training accepts works: clips are mixed to mono, resampled to
the model's rate, and processed in windows of the trained segment length that
overlap by half and are joined with Hann crossfades (they sum to exactly 1, so
there are no clicks). The output has the input's length and the model's rate;
a peak above full scale is turned down, never clipped.
"""

import argparse
import sys

import numpy as np
import soundfile as sf
import torch

import checkpointing
import data
import health_report
import verdict
from model import MDCTCodec


def windows(length, size):
    """Starts of windows of `size` with hop size/2 covering [0, length) twice over
    (pad by size/2 on both sides), and the Hann crossfade that sums to 1."""
    hop = size // 2
    starts = list(range(-hop, length, hop))
    fade = np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2  # periodic Hann at 50% overlap: sums to 1
    return starts, fade


def padded_slice(audio, start, size):
    """audio[start:start+size], zero outside, target clips looped to cover. # (size,)"""
    index = np.arange(start, start + size)
    out = audio[np.clip(index, 0, len(audio) - 1)].copy()
    out[(index < 0) | (index >= len(audio))] = 0.0
    return out


@torch.no_grad()
def generate(model, codec, in_audio, tgt_audio, segment):
    """in_audio, tgt_audio: mono numpy at the model's rate, equally long -> (output like in_audio, mean stage scale factors)."""
    if len(in_audio) <= segment:
        starts, fade, size = [0], np.ones(len(in_audio)), len(in_audio)
    else:
        size = segment // 2 * 2  # even, so the two halves of the crossfade meet exactly
        starts, fade = windows(len(in_audio), size)
    out = np.zeros(len(in_audio) + 2 * size)
    scales = []
    for start in starts:
        x_in = codec.encode(torch.from_numpy(padded_slice(in_audio, start, size))[None])
        x_tgt = codec.encode(torch.from_numpy(padded_slice(tgt_audio, start, size))[None])
        frames, stats = model(x_in, x_tgt)
        out[size + start: 2 * size + start] += fade * codec.decode(frames, size)[0].numpy()
        scales.append((stats["scale1"].item(), stats["scale2"].item()))
    return out[size: size + len(in_audio)].astype(np.float32), np.mean(scales, axis=0)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by train.py")
    parser.add_argument("--input", required=True, help="the input clip (any format libsndfile reads)")
    parser.add_argument("--target", required=True, help="the target clip")
    parser.add_argument("--out", required=True, help="where to write the result (.wav, .flac, ...)")
    args = parser.parse_args(argv)

    try:
        state = checkpointing.load(args.ckpt)
        model = checkpointing.model_from(state).eval()
    except checkpointing.CheckpointError as e:
        raise SystemExit(f"--ckpt: {e}") from None
    hp = state["hyperparameters"]
    rate = hp["sample_rate"]
    segment = int(round(hp["segment_seconds"] * rate))
    try:
        in_audio, tgt_audio = data.read_mono(args.input, rate), data.read_mono(args.target, rate)
    except ValueError as e:
        raise SystemExit(f"cannot use {e}") from None
    tgt_audio = np.resize(tgt_audio, len(in_audio))  # loop or cut the target to the input's length

    out, (scale1, scale2) = generate(model, MDCTCodec(model.config.frame_dim), in_audio, tgt_audio, segment)
    peak = np.abs(out).max()
    if peak > 1.0:
        out /= peak / 0.999
        print(f"output peaked at {peak:.3f}; turned down by {20 * np.log10(peak / 0.999):.1f} dB instead of clipping")
    try:
        sf.write(args.out, out, rate)
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as e:
        raise SystemExit(f"cannot write {args.out}: {e}") from None

    clips = (torch.from_numpy(a).view(1, 1, -1) for a in (out, in_audio, tgt_audio))  # (B, 1, N)
    health = {"scale1": scale1, "scale2": scale2,
              **{k: v.item() for k, v in health_report.output_health(*clips, model.config.rms_floor).items()},
              **health_report.judged_health([verdict.measure(out, in_audio, tgt_audio, rate)], (in_audio, tgt_audio, out))}
    lines, warnings = health_report.health_lines(health)
    print(f"wrote {args.out}: {len(out) / rate:.2f} s at {rate} Hz from {args.ckpt} (epoch {state['epoch']}); "
          f"{len(warnings)} warnings\n" + "\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
