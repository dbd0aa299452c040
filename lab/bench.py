"""
Training-step speed and memory of our cascade against a plain reference.

    python -m lab.bench            # default config (2 s clips) and the 16 s config
    python -m lab.bench --compile  # also ours under torch.compile, with its compile time
    python -m lab.bench --quick    # fewer steps, only the trained clip length: a smoke test
    python -m lab.bench --n_layer=4 --batch_size=16   # the step of another config: any of train.py's --name=value
    python -m lab.bench --collection_hours=3   # instead: train.py's peak memory, hours vs minutes of music
    python -m lab.bench --generation           # instead: generate.py's speed and memory on 44.1 kHz stereo songs

With train.py's default data (rendered scores), every clip plays grains from its own material,
as in training. The reference is the same architecture written the way the original research
code was: nn.TransformerEncoder layers, float32. Both run train.py's own step
(training.train_step): forward, the objective, backward, the NaN check, clipping,
AdamW.
Timings are medians of several steps after warm-up, the two alternating so
that machine noise hits both alike. FLOPs are counted analytically (matrix
products and attention) and compared with this machine's own matmul peak,
measured in the same run.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict

import numpy as np
import soundfile as sf
import torch
import torch.nn as nn

from cascade_rms import checkpointing, data, hyperparameters, objective, training
from lab import ROOT
from model import HARMONICS, N_KEYS, Cascade, MDCTCodec

HYPERPARAMETERS = hyperparameters.defaults()  # what the timed step runs with

REFERENCE_DROPOUT = 0.1  # the original design's: ours trains without dropout, which the blend evaluation showed does not hurt
LONG_SECONDS = 16.0  # the original design's clip length: a second row, where attention's memory shows


class ReferenceCascade(Cascade):
    """Our cascade with each stage's blocks swapped for nn.TransformerEncoderLayer, trained as
    the original code was: float32, dropout 0.1 on residual branches and attention weights."""

    def __init__(self, config):
        super().__init__(config)
        for n_sources, stage in ((2, self.stage1), (3, self.stage2)):
            d_model = n_sources * config.frame_dim
            stage.blocks = nn.ModuleList(
                nn.TransformerEncoderLayer(d_model, config.n_head, dim_feedforward=4 * d_model, dropout=REFERENCE_DROPOUT,
                                           activation="gelu", batch_first=True, norm_first=True)
                for _ in range(config.n_layer))

    def load_from(self, ours):
        """Copy the weights of one of our models (same config) into this one."""
        rename = {"attn.in_proj.weight": "self_attn.in_proj_weight", "attn.in_proj.bias": "self_attn.in_proj_bias",
                  "attn.out_proj.": "self_attn.out_proj."}
        state = {}
        for name, value in ours.state_dict().items():
            for old, new in rename.items():
                name = name.replace(old, new)
            state[name] = value
        self.load_state_dict(state)
        return self


def step_flops(config, B, T, attention=True):
    """Matrix-product and attention FLOPs of one training step (backward = 2x forward)."""
    D, R, n_bands = config.frame_dim, config.chunk_frames, config.pointer_bands
    total = 0
    for S in (2, 3):
        width = S * D
        per_layer = 2 * B * T * 12 * width**2 + attention * 4 * B * T * T * width  # qkv, out, FFN; QK^T and AV
        total += config.n_layer * per_layer
        if config.head == "pointer":
            chunks = -(-T // R)
            playable = 1 if config.pointer_corpus == "target" else S  # sources whose grains may be played
            chroma = config.pointer_chroma > 0 and ((1 + playable) * T * D * 2 * D  # decode the input and the corpus
                                                    + (chunks + playable * T) * (R * D // 2 + 1) * 12  # chroma of grains
                                                    + chunks * 12 * playable * T)  # pitch-class distances
            total += 2 * B * (S * (T + R - 1) * D * n_bands  # band levels of every frame
                              + config.pointer_seek * chunks * width * n_bands * R + T * width * S  # seek, prefer
                              + (config.pointer_continuity > 0) * chunks * width + chroma  # carry, chroma
                              + chunks * n_bands * R * S * T  # distances of every grain to every chunk's query
                              + S * T * D * 2 * D + T * 2 * D * D  # decode the sources, encode the output
                              + chunks * min(config.pointer_candidates, S * T) * (R + 2) * D)  # mix the candidates
        else:
            total += 2 * B * T * width * D
    if config.notes:  # stage 1's transcription: decode, harmonic filterbank (every second frame), key convolution,
        keys = len(HARMONICS) * N_KEYS  # projections, note head
        total += 2 * B * (T * (D * 2 * D + 8 * keys * 5 + 8 * N_KEYS * 2 * D + 2 * D * N_KEYS)
                          + (T // 2 + 1) * (config.note_fft // 2 + 1) * keys)
    return 3 * total


def matmul_peak(dtype, device, n=2048, reps=10):
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def make_step(models, hp, dtype, device, B, T):
    """train.py's own training step (training.train_step: forward, objective, backward, the NaN
    abort, clipping, AdamW) on a fixed random batch; returns a callable."""
    model, train_model = models
    optimizer = training.optimizer_for(model, hp["lr"], hp["weight_decay"])
    weights, step_config = hyperparameters.section(objective.LossWeights, hp), hyperparameters.section(training.StepConfig, hp)
    codec = MDCTCodec(model.config.frame_dim).to(device)
    process = training.Process(0, 1, device, device, dtype)
    g = torch.Generator().manual_seed(0)
    x_in = (0.1 * torch.randn(B, model.config.frame_dim, T, generator=g)).to(device)
    x_tgt = (0.1 * torch.randn(B, model.config.frame_dim, T, generator=g)).to(device)
    corpus = None
    if hp["dataset"] == "scores" and not hp["data_dir"] and model.config.head == "pointer":
        # each clip's material, described once as train.py's cache does: the step plays from it
        material = 0.05 * torch.randn(B, data.seconds_to_samples(hp["material_seconds"], model.config.sample_rate), generator=g)
        corpus = model.describe(material.to(device))

    def step():
        training.train_step(model, train_model, optimizer, codec, x_in, x_tgt, weights, step_config, process, 1, None,
                            corpus)
        sync(device)
    return step


def nan_check_cost(models, hp, dtype, device, B, T, reps=20):
    """ms per step of clipping with the NaN abort (training.clip_gradients: total norm, the check
    on loss and norm, clipping) and of plain clipping (clip_grad_norm_), on one step's gradients."""
    model, _ = models
    make_step(models, hp, dtype, device, B, T)()  # gradients to work on
    loss, terms = 1.0, {"follow": 1.0}
    timings = []
    for clip in (lambda: training.clip_gradients(model, hp["grad_clip"], 1, loss, terms, None, hp["top_k"], None),
                 lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])):
        clip()
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            clip()
        sync(device)
        timings.append((time.perf_counter() - t0) / reps * 1000)
    return timings


def op_breakdown(step, ms_per_step, steps=3, top=10):
    """The operators of a step by self time (torch.profiler), as lines: where the next speed-up is."""
    with torch.profiler.profile() as profile:
        for _ in range(steps):
            step()
    events = sorted(profile.key_averages(), key=lambda e: -e.self_device_time_total if e.self_device_time_total
                    else -e.self_cpu_time_total)[:top]
    lines = []
    for e in events:
        ms = (e.self_device_time_total or e.self_cpu_time_total) / 1000 / steps
        lines.append(f"  {e.key[:48]:<48} {ms:7.1f} ms {ms / ms_per_step:6.1%} of the step, {e.count // steps:5d} calls")
    return lines


def train_run_rate(overrides, epochs=1):
    """Steps per second of train.py itself, with the benchmark's overrides, on the demo music: (median
    step ms from its log lines, wall seconds of the whole run including data, validation and
    checkpoints, steps)."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        result = subprocess.run([sys.executable, hyperparameters.TRAIN_SCRIPT, *overrides, f"--out_dir={tmp}",
                                 f"--epochs={epochs}"], capture_output=True, text=True, cwd=ROOT)
        wall = time.time() - t0
    if result.returncode:
        raise SystemExit(f"train.py failed:\n{result.stderr[-3000:]}")
    dts = [float(line.rsplit("dt ", 1)[1].split()[0]) for line in result.stdout.splitlines() if line.startswith("step ")]
    return statistics.median(dts), wall, len(dts)


def build(impl, config, device):
    """impl: (kind, dtype, compiled); kind is "ours" or "reference". Returns (model, the model the step runs)."""
    kind, _, compiled = impl
    torch.manual_seed(0)
    ours = Cascade(config)
    model = (ours if kind == "ours" else ReferenceCascade(config).load_from(ours)).to(device).train()
    return model, torch.compile(model) if compiled else model


def impl_name(impl):
    kind, dtype, compiled = impl
    return f"{kind} {dtype}" + " compiled" * compiled


def peak_memory_child(impl, seconds, device, hp):
    """Memory a training step adds at its peak, measured in a fresh process after one
    warm-up step (which compiles, and allocates AdamW's moments): on CPU the peak
    resident set above the resident set between steps."""
    config = hyperparameters.cascade_config(hp)
    T = data.seconds_to_samples(seconds, config.sample_rate) // config.frame_dim + 1
    step = make_step(build(impl, config, device), hp, impl[1], device, hp["batch_size"], T)
    step()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        return torch.cuda.max_memory_allocated() - base
    with open("/proc/self/clear_refs", "w") as f:  # resets the kernel's peak-RSS mark (VmHWM)
        f.write("5")
    before = vm_kib("VmRSS")
    step()
    return (vm_kib("VmHWM") - before) * 1024


def vm_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_memory(impl, seconds, device, hp):
    code = f"from lab import bench; print(bench.peak_memory_child({impl!r}, {seconds!r}, {device!r}, {hp!r}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        raise RuntimeError(result.stderr)
    return int(result.stdout.split()[-1])

# -----------------------------------------------------------------------------
# memory against the size of the music collection


def write_collection(folder, minutes, file_minutes, sample_rate=44100):
    """44.1 kHz stereo FLAC songs totalling `minutes`, standing in for a user's music folder."""
    os.makedirs(folder)
    for i in range(math.ceil(minutes / file_minutes)):
        left = data.demo_piece(100 + i, 60 * file_minutes, sample_rate)
        right = 0.8 * np.roll(left, sample_rate // 100)  # a stereo image: the right channel 10 ms late
        sf.write(os.path.join(folder, f"song_{i:03d}.flac"), np.stack([left, right], axis=1), sample_rate)


def peak_memory_run(script, *args):
    """Run script with args; its peak resident set in bytes, its wall time and its stdout.
    The peak is the child's own VmHWM, read as it exits: rusage's maxrss would also count
    the parent it was forked from."""
    code = ("import atexit, runpy, sys; from lab import bench; atexit.register(lambda: print('VmHWM', bench.vm_kib('VmHWM'))); "
            f"sys.argv[0] = {script!r}; runpy.run_path({script!r}, run_name='__main__')")
    t0 = time.time()
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{script} {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return int(result.stdout.splitlines()[-1].split()[1]) * 1024, time.time() - t0, result.stdout


def train_peak_memory(data_dir, work_dir, overrides):
    """One epoch of train.py (with the benchmark's overrides) on data_dir, the cache built on the way: its peak
    resident set in bytes, its wall time and its last step line."""
    peak, seconds, stdout = peak_memory_run("train.py", *overrides, f"--data_dir={data_dir}", f"--out_dir={work_dir}/checkpoints",
                                            f"--cache_dir={work_dir}/cache", "--epochs=1")
    steps = next(line for line in reversed(stdout.splitlines()) if line.startswith("step ")).split(" | ")[0]
    return peak, seconds, steps


def collection_memory(hours, overrides):
    print(f"train.py peak memory (resident set, cache build + one epoch, {' '.join(overrides) or 'defaults'}) "
          f"on 44.1 kHz stereo FLAC collections generated here; torch {torch.__version__}\n")
    with tempfile.TemporaryDirectory() as tmp:
        for minutes, file_minutes in ((6, 2), (60 * hours, 10)):
            folder = os.path.join(tmp, f"music_{minutes}")
            write_collection(folder, minutes, file_minutes)
            size = sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))
            peak, seconds, steps = train_peak_memory(folder, os.path.join(tmp, f"run_{minutes}"), overrides)
            print(f"{minutes / 60:6.2f} h of music ({len(os.listdir(folder))} files, {size / 2**20:6.0f} MiB FLAC): "
                  f"peak {peak / 2**20:6.0f} MiB, {steps}, {seconds / 60:.1f} min", flush=True)

# -----------------------------------------------------------------------------
# generation


def generation_speed(hp):
    """generate.py on 44.1 kHz stereo FLAC songs made here, with the default model untrained
    (training changes no cost): a 3-minute song, 5 minutes against 5, and 5 minutes against a
    1-hour folder, the first run building the caches and the second using them."""
    print(f"generate.py, default model, 44.1 kHz stereo FLAC; {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    with tempfile.TemporaryDirectory() as tmp:
        config = hyperparameters.cascade_config(hp)
        ckpt = os.path.join(tmp, "untrained.pth")
        checkpointing.save({"format": checkpointing.FORMAT, "model_config": asdict(config), "epoch": 0,
                            "model": Cascade(config).state_dict(), "hyperparameters": hp}, ckpt)
        for name, minutes in (("song3", 3), ("song5", 5), ("target5", 5), ("corpus", 60)):
            write_collection(os.path.join(tmp, name), minutes, min(minutes, 10))
        cases = [("3 min song, 3 min target", "song3", "song5"), ("5 min song, 5 min target", "song5", "target5"),
                ("5 min song, 1 h folder (caches built)", "song5", "corpus"), ("5 min song, 1 h folder (cached)", "song5", "corpus")]
        for what, song, target in cases:
            song_path = os.path.join(tmp, song, "song_000.flac")
            target_path = os.path.join(tmp, target) if target == "corpus" else os.path.join(tmp, target, "song_000.flac")
            peak, wall, stdout = peak_memory_run("generate.py", "--ckpt", ckpt, "--input", song_path, "--target", target_path,
                                                 "--out", os.path.join(tmp, "out.flac"), f"--cache_dir={tmp}/cache")
            factor = next(line for line in stdout.splitlines() if "real-time factor" in line)
            print(f"{what:<40} peak {peak / 2**20:6.0f} MiB, {wall:6.1f} s wall; generating: {factor}", flush=True)

# -----------------------------------------------------------------------------


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m lab.bench", description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--quick", action="store_true", help="fewer steps and only the default config")
    parser.add_argument("--compile", action="store_true", help="also time ours under torch.compile")
    parser.add_argument("--collection_hours", type=float, help="measure train.py's peak memory on this many hours "
                        "of generated music against a few minutes, instead of the step benchmark")
    parser.add_argument("--generation", action="store_true", help="measure generate.py's speed and memory on songs "
                        "and a 1-hour corpus, instead of the step benchmark")
    args, overrides = parser.parse_known_args(argv)
    hp = hyperparameters.parse_overrides(overrides, HYPERPARAMETERS)
    if args.generation:
        return generation_speed(hp)
    if args.collection_hours:
        return collection_memory(args.collection_hours, overrides)
    quick, compiled = args.quick, args.compile
    if compiled:
        torch.compiler.config.force_disable_caches = True  # time a cold compile: a user's first run pays it
        warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    fast = "bfloat16" if training.fast_bfloat16(device) else "float32"
    config, B = hyperparameters.cascade_config(hp), hp["batch_size"]
    # bfloat16's peak only where it is fast: emulated, a large bf16 product takes minutes and no row runs in it
    peaks = {dtype: matmul_peak(getattr(torch, dtype), device) for dtype in {"float32", fast}}
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?") \
        if os.path.exists("/proc/cpuinfo") else "?"
    machine = torch.cuda.get_device_name() if device == "cuda" else f"{cpu}, {torch.get_num_threads()} threads"
    print(f"machine: {machine}; torch {torch.__version__}")
    print("measured matmul peak: " + ", ".join(f"{dtype} {peak / 1e9:.0f} GFLOP/s" for dtype, peak in sorted(peaks.items())))
    print(f"model: {config}; batch {B}; reference dropout {REFERENCE_DROPOUT}\n")
    header = f"{'config':<16} {'impl':<22} {'ms/step':>8} {'frames/s':>9} {'GFLOP/step':>10} {'GFLOP/s':>8} {'of peak':>8} {'peak MiB':>9}"
    print(header + "\n" + "-" * len(header))
    results = []
    lengths = {f"trained ({hp['segment_seconds']:g} s)": hp["segment_seconds"], f"long ({LONG_SECONDS:g} s)": LONG_SECONDS}
    for name, seconds in (list(lengths.items())[:1] if quick else lengths.items()):
        T = data.seconds_to_samples(seconds, config.sample_rate) // config.frame_dim + 1
        impls = [("ours", fast, False), ("reference", "float32", False)] + [("ours", fast, True)] * compiled
        steps, compile_s = {}, {}
        for impl in impls:
            steps[impl] = make_step(build(impl, config, device), hp, impl[1], device, B, T)
            if impl[2]:
                t0 = time.perf_counter()
                steps[impl]()  # the compile happens here
                compile_s[impl] = time.perf_counter() - t0
        times = {impl: [] for impl in impls}
        warmup, reps = (1, 2) if quick else (1, 3) if seconds > 4 else (2, 6)  # long steps take seconds each
        for i in range(warmup + reps):
            for impl, step in steps.items():
                t0 = time.perf_counter()
                step()
                if i >= warmup:
                    times[impl].append(time.perf_counter() - t0)
        flops = step_flops(config, B, T)
        rows = {}
        for impl, ts in times.items():
            ms = statistics.median(ts) * 1000
            rate = flops / (ms / 1000)
            memory = peak_memory(impl, seconds, device, hp) / 2**20
            r = rows[impl] = {"config": name, "impl": impl_name(impl), "ms": ms, "frames_per_s": B * T / (ms / 1000),
                              "gflop": flops / 1e9, "gflops": rate / 1e9, "of_peak": rate / peaks[impl[1]], "peak_mib": memory}
            print(f"{name:<16} {r['impl']:<22} {ms:8.0f} {r['frames_per_s']:9.0f} {r['gflop']:10.1f} {r['gflops']:8.0f} "
                  f"{r['of_peak']:8.1%} {memory:9.0f}")
        ours, reference = rows[impls[0]], rows[impls[1]]
        speedup = reference["ms"] / ours["ms"]
        print(f"{name:<16} speed-up ours/reference: {speedup:.2f}x")
        checked, plain = nan_check_cost(build(impls[0], config, device), hp, fast, device, B, T)
        print(f"{name:<16} NaN abort: clipping with the check {checked:.2f} ms, plain clip_grad_norm_ {plain:.2f} ms: "
              f"{(checked - plain) / ours['ms']:+.2%} of our step")
        print(f"{name:<16} where our step's time goes (torch.profiler, self time):")
        print("\n".join(op_breakdown(steps[impls[0]], ours["ms"])))
        for impl, first_step_s in compile_s.items():
            saved_ms = ours["ms"] - rows[impl]["ms"]
            pays_off = f"pays off after {first_step_s * 1000 / saved_ms:.0f} steps" if saved_ms > 0 else "never pays off"
            print(f"{name:<16} torch.compile: {ours['ms'] / rows[impl]['ms']:.2f}x the speed; first step "
                  f"{first_step_s:.0f} s (compiling), {pays_off}")
        print()
        results += [{**r, "speedup": reference["ms"] / r["ms"]} for r in rows.values()]
    if not quick:
        ms, wall, n = train_run_rate(overrides)
        print(f"train.py, {' '.join(overrides) or 'defaults'}, one epoch: {n} steps, median {ms:.0f} ms a step = {1000 / ms:.2f} steps/s; "
              f"{wall:.0f} s wall with data, validation and checkpoint ({n / wall:.2f} steps/s end to end)\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
