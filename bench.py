"""
Training-step speed and memory of our cascade against a plain reference.

    python bench.py            # default config (2 s clips) and the 16 s config
    python bench.py --quick    # fewer steps, for a smoke test

The reference is the same architecture written the way the original research
code was: nn.TransformerEncoder layers, float32. Both run the same loss
(train.objective) and the same step: forward, loss, backward, clip, AdamW.
Timings are medians of several steps after warm-up, the two alternating so
that machine noise hits both alike. FLOPs are counted analytically (matrix
products and attention) and compared with this machine's own matmul peak,
measured in the same run.
"""

import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn

import train
from model import Cascade

CONFIGS = {"default (2 s)": 2.0, "long (16 s)": 16.0}  # segment seconds, at train.py's sample rate and batch size


class ReferenceCascade(Cascade):
    """Our cascade with each stage's blocks swapped for nn.TransformerEncoderLayer."""

    def __init__(self, config):
        super().__init__(config)
        for stage in (self.stage1, self.stage2):
            d_model = stage.proj.in_features
            stage.blocks = nn.ModuleList(
                nn.TransformerEncoderLayer(d_model, config.n_head, dim_feedforward=4 * d_model, dropout=config.dropout,
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
    total = 0
    for width in (2 * config.frame_dim, 3 * config.frame_dim):
        per_layer = 2 * B * T * 12 * width**2 + attention * 4 * B * T * T * width  # qkv, out, FFN; QK^T and AV
        total += config.n_layer * per_layer + 2 * B * T * width * config.frame_dim
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


def make_step(model, hp, dtype, device, B, T):
    """One full training step on a fixed random batch; returns a callable."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    g = torch.Generator().manual_seed(0)
    x_in = (0.1 * torch.randn(B, model.config.frame_dim, T, generator=g)).to(device)
    x_tgt = (0.1 * torch.randn(B, model.config.frame_dim, T, generator=g)).to(device)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            out, _ = model(x_in, x_tgt)
        loss, _ = train.objective(out, x_in, x_tgt, hp)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        optimizer.step()
        sync(device)
    return step


def build(kind, config, device):
    torch.manual_seed(0)
    ours = Cascade(config)
    return (ours if kind == "ours" else ReferenceCascade(config).load_from(ours)).to(device).train()


def peak_memory_child(kind, dtype, seconds, device):
    """Memory a training step adds at its peak, measured in a fresh process: on CPU the
    peak resident set above the resident set with model, optimizer and batch in place."""
    hp = train.HYPERPARAMETERS
    config = train.model_config(hp)
    T = int(seconds * hp["sample_rate"]) // config.frame_dim + 1
    step = make_step(build(kind, config, device), hp, dtype, device, hp["batch_size"], T)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        for _ in range(2):
            step()
        return torch.cuda.max_memory_allocated()
    with open("/proc/self/clear_refs", "w") as f:  # resets the kernel's peak-RSS mark (VmHWM)
        f.write("5")
    before = vm_kib("VmRSS")
    for _ in range(2):
        step()
    return (vm_kib("VmHWM") - before) * 1024


def vm_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_memory(kind, dtype, seconds, device):
    code = f"import bench; print(bench.peak_memory_child({kind!r}, {dtype!r}, {seconds!r}, {device!r}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    if result.returncode:
        raise RuntimeError(result.stderr)
    return int(result.stdout.split()[-1])


def main(argv):
    quick = "--quick" in argv
    device = "cuda" if torch.cuda.is_available() else "cpu"
    fast = "bfloat16" if train.fast_bfloat16(device) else "float32"
    hp = train.HYPERPARAMETERS
    config = train.model_config(hp)
    B = hp["batch_size"]
    peaks = {"float32": matmul_peak(torch.float32, device), "bfloat16": matmul_peak(torch.bfloat16, device)}
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?") \
        if os.path.exists("/proc/cpuinfo") else "?"
    machine = torch.cuda.get_device_name() if device == "cuda" else f"{cpu}, {torch.get_num_threads()} threads"
    print(f"machine: {machine}; torch {torch.__version__}")
    print(f"measured matmul peak: float32 {peaks['float32'] / 1e9:.0f} GFLOP/s, bfloat16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s")
    print(f"model: {config}; batch {B}, {hp['sample_rate']} Hz\n")
    header = f"{'config':<14} {'impl':<22} {'ms/step':>8} {'frames/s':>9} {'GFLOP/step':>10} {'GFLOP/s':>8} {'of peak':>8} {'peak MiB':>9}"
    print(header + "\n" + "-" * len(header))
    results = []
    for name, seconds in (list(CONFIGS.items())[:1] if quick else CONFIGS.items()):
        T = int(seconds * hp["sample_rate"]) // config.frame_dim + 1
        runs = {("ours", fast): None, ("reference", "float32"): None}
        steps = {key: make_step(build(key[0], config, device), hp, key[1], device, B, T) for key in runs}
        times = {key: [] for key in runs}
        warmup, reps = (1, 2) if quick else (1, 3) if seconds > 4 else (2, 6)  # long steps take seconds each
        for i in range(warmup + reps):
            for key, step in steps.items():
                t0 = time.perf_counter()
                step()
                if i >= warmup:
                    times[key].append(time.perf_counter() - t0)
        flops = step_flops(config, B, T)
        rows = {}
        for (kind, dtype), ts in times.items():
            ms = statistics.median(ts) * 1000
            rate = flops / (ms / 1000)
            memory = peak_memory(kind, dtype, seconds, device) / 2**20
            rows[kind] = {"config": name, "impl": f"{kind} {dtype}", "ms": ms, "frames_per_s": B * T / (ms / 1000),
                          "gflop": flops / 1e9, "gflops": rate / 1e9, "of_peak": rate / peaks[dtype], "peak_mib": memory}
            r = rows[kind]
            print(f"{name:<14} {r['impl']:<22} {ms:8.0f} {r['frames_per_s']:9.0f} {r['gflop']:10.1f} {r['gflops']:8.0f} "
                  f"{r['of_peak']:8.1%} {memory:9.0f}")
        speedup = rows["reference"]["ms"] / rows["ours"]["ms"]
        print(f"{name:<14} speed-up ours/reference: {speedup:.2f}x\n")
        results += [{**r, "speedup": speedup} for r in rows.values()]
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
