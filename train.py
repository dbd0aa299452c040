"""
Train the two-stage cascade on pairs of clips (segment k -> segment k+1).

    python train.py                        # built-in demo music, defaults below
    python train.py --lr=3e-4 --epochs=20  # any hyperparameter as --name=value
    python train.py --resume=auto          # continue the newest checkpoint in out_dir
    torchrun --standalone --nproc_per_node=4 train.py   # DDP: batch_size pairs per rank

Each step prints one line; each epoch prints a health report (gradient norms,
RMS ratios, temporal structure, the blend verdict of every validation pair,
correlations), writes a checkpoint, metrics and the validation sample as WAV
files. A non-finite loss or gradient stops the run before the optimizer step,
with exit code 3 and a report of where.
"""

import math
import os
import signal
import sys
import time
from dataclasses import asdict, fields

import numpy as np
import soundfile as sf
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

import blend
import checkpointing
import data
from model import Cascade, CascadeConfig, MDCTCodec

# ----------------------------------------------------------------------------- hyperparameters
# data
data_dir = ""  # a folder of your audio (searched recursively); "" = the built-in demo music
sample_rate = 16000  # the model's rate; user audio is resampled to it
segment_seconds = 2.0  # length of one clip of a pair
val_fraction = 0.15  # share of files (or demo pieces) held out for validation
shuffle_targets = False  # True: pair each input with a segment of another file
demo_pieces = 24  # demo: synthetic songs generated, train + validation
demo_seconds = 24.0  # demo: length of each song
cache_dir = ".cache/audio"  # user audio decoded once to the model's rate
# model
frame_dim = 128  # D, MDCT bins per frame
n_layer = 2  # per stage
n_head = 4
dropout = 0.1
final_residual = 0.1  # stage-2 residual weight (0.2-0.3 was the seed's remedy for constant output)
head = "pointer"  # pointer: every 128 ms is a run of a source's audio, chosen by attention; linear: the seed's head
chunk_frames = 16  # pointer: frames per copied run (128 ms at 16 kHz)
min_shift_frames = 63  # pointer: runs come from at least this far in time (0.5 s at 16 kHz)
pointer_bands = 16  # pointer: log-spaced bands that describe a run
pointer_sharpness = 10.0  # pointer: how sharply the choice prefers the nearest run
frame_norm = False  # True: LayerNorm every frame (the seed's design; erases the envelope)
rms_floor = 1e-6  # RMS below this (-120 dBFS) counts as silence
# loss
follow_weight = 1.0  # the output's band levels follow the input's, frame by frame
sound_weight = 1.0  # the output's average spectrum is the target's: its instruments and key
copy_weight = 1.0  # hinge on the output's waveform correlation with either source, at any lag within 0.5 s
copy_margin = 0.3  # correlation the copy term allows
novelty_weight = 0.0  # the seed's term: squared lag-0 correlation with input and target (seed default 0.85)
recon_weight = 0.0  # the seed's term: relative error to the target (its remedy: 0.01-0.05)
# optimizer
lr = 1e-4
weight_decay = 0.01
grad_clip = 1.0  # max-norm of the total gradient
batch_size = 8  # pairs per step, per rank under torchrun
# run
epochs = 10
seed = 1337
out_dir = "checkpoints"
keep_checkpoints = 3  # newest checkpoints kept; older ones are deleted
resume = ""  # "" = fresh run, "auto" = newest good checkpoint in out_dir, or a path
log_interval = 10  # steps between "top grads" lines
top_k = 5  # parameters listed in "top grads"
device = "auto"  # auto, cpu, cuda
dtype = "auto"  # float32, bfloat16 (autocast; RMS, losses and AdamW stay float32), or auto: bfloat16 where matmuls are fast in it
compile = False  # torch.compile the model: for GPUs; slower on a 2-core CPU after a 30 s compile (bench.py --compile)
# -----------------------------------------------------------------------------
HYPERPARAMETERS = {k: v for k, v in dict(globals()).items() if not k.startswith("_") and isinstance(v, (bool, int, float, str))}

NAN_ABORT_EXIT = 3
TEST_NAN_STEP = "CASCADE_TEST_NAN_STEP"  # tests only: poison one gradient at this step


# -----------------------------------------------------------------------------
# hyperparameters from the command line


def parse_overrides(argv, defaults=HYPERPARAMETERS):
    """--name=value for any hyperparameter, typed like its default."""
    hp = dict(defaults)
    for arg in argv:
        name, eq, text = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or not eq:
            raise SystemExit(f"cannot read argument {arg!r}: write hyperparameters as --name=value")
        if name not in hp:
            raise SystemExit(f"unknown hyperparameter {name!r}; valid names: {', '.join(sorted(hp))}")
        kind = type(defaults[name])
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                hp[name] = text.lower() in ("true", "1")
            else:
                hp[name] = kind(text)
        except ValueError:
            raise SystemExit(f"--{name}={text}: expected {kind.__name__} like the default {defaults[name]!r}") from None
    return hp


def check_values(hp):
    positive = ["sample_rate", "segment_seconds", "demo_pieces", "demo_seconds", "frame_dim", "n_layer", "n_head",
                "lr", "grad_clip", "batch_size", "epochs", "keep_checkpoints", "log_interval", "top_k"]
    for name in positive:
        if not hp[name] > 0:
            raise SystemExit(f"--{name}={hp[name]} must be > 0")
    if not 0 < hp["val_fraction"] < 1:
        raise SystemExit(f"--val_fraction={hp['val_fraction']} must be between 0 and 1")
    if hp["dtype"] not in ("auto", "float32", "bfloat16"):
        raise SystemExit(f"--dtype={hp['dtype']} must be auto, float32 or bfloat16")
    if hp["device"] not in ("auto", "cpu", "cuda"):
        raise SystemExit(f"--device={hp['device']} must be auto, cpu or cuda")


def fast_bfloat16(device):
    """bf16 matmuls run several times faster than fp32 on CUDA and on CPUs with
    AVX512-BF16 or AMX (5x measured on a 2-core EPYC); elsewhere they are emulated, slower."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def model_config(hp):
    try:
        return CascadeConfig(**{f.name: hp[f.name] for f in fields(CascadeConfig)})
    except ValueError as e:
        raise SystemExit(f"bad model hyperparameters: {e}") from None


# -----------------------------------------------------------------------------
# the NaN abort


class NonFiniteError(Exception):
    """Raised before the optimizer step; its message is the full report."""

    def __init__(self, report, loss, terms, grad_norm):
        super().__init__(report)
        self.loss, self.terms, self.grad_norm = loss, terms, grad_norm


def gradient_norms(model):
    return {name: p.grad.norm().item() for name, p in model.named_parameters() if p.grad is not None}


def top_gradients(norms, k):
    return ", ".join(f"{name} ({norm:.3g})" for name, norm in sorted(norms.items(), key=lambda kv: -kv[1])[:k])


def first_non_finite_module(model, forward):
    """Rerun forward with hooks; name the first module whose output is non-finite."""
    found = []

    def hook(module, args, output):
        tensors = output if isinstance(output, tuple) else (output,)
        if not found and any(isinstance(t, torch.Tensor) and not torch.isfinite(t).all() for t in tensors):
            found.append(name_of[module])

    name_of = {module: name or "model" for name, module in model.named_modules()}
    handles = [module.register_forward_hook(hook) for module in name_of]
    try:
        with torch.no_grad():
            forward()
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else "none: the forward pass is finite, so the non-finite values arose in the backward pass"


def check_finite(step, loss, terms, grad_norm, model, forward, top_k, newest_checkpoint):
    """The NaN abort: raise NonFiniteError with the report if the loss or the gradient norm is not finite."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    norms = gradient_norms(model)
    bad = [name for name, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    finite = {name: norm for name, norm in norms.items() if math.isfinite(norm)}
    raise NonFiniteError("\n".join([
        f"NaN abort at step {step}: loss {loss:.6g}, grad_norm {grad_norm:.6g}; the weights were not updated",
        "  loss terms: " + ", ".join(f"{k} {v:.6g}" for k, v in terms.items()),
        f"  non-finite gradients ({len(bad)}): " + (", ".join(bad) or "none"),
        f"  top grads (finite): {top_gradients(finite, top_k)}",
        f"  first non-finite module output: {first_non_finite_module(model, forward)}",
        f"  newest good checkpoint: {newest_checkpoint or 'none yet'}",
    ]), loss, terms, grad_norm)


def clip_gradients(model, max_norm, step, loss, terms, forward, top_k, newest_checkpoint, mean_over_ranks=list):
    """Pre-clip total gradient norm, the NaN abort, then clipping; returns the loss, terms and
    pre-clip norm averaged over ranks. The check comes before clipping, which would smear one bad
    gradient over all of them, and uses the averages, so a non-finite value on any rank stops
    every rank at the same step and none is left waiting in a collective."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm(grads)
    loss, *values, mean_norm = mean_over_ranks([loss, *terms.values(), grad_norm.item()])
    terms = dict(zip(terms, values))
    check_finite(step, loss, terms, mean_norm, model, forward, top_k, newest_checkpoint)
    torch.nn.utils.clip_grads_with_norm_(grads, max_norm, grad_norm)
    return loss, terms, mean_norm


def over_ranks(values, device, op=dist.ReduceOp.SUM):
    """Reduce a list of floats over all ranks (a NaN anywhere is NaN everywhere); without DDP, the values."""
    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op)
    return t.tolist()


def from_every_rank(obj):
    """[obj of rank 0, obj of rank 1, ...]; [obj] without DDP."""
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


# -----------------------------------------------------------------------------
# the run


def resume_position(state, steps_per_epoch, global_batch):
    """(epoch, batches of it done) to continue from. A run resumed with another global
    batch (other world size) skips the pairs its epoch has already seen, rounding up."""
    epoch = state["epoch"]
    done = state.get("epoch_step", state["step"] - epoch * steps_per_epoch)  # one-process checkpoints before DDP
    saved_batch = state.get("global_batch", state["hyperparameters"]["batch_size"])
    return epoch, -(-done * saved_batch // global_batch)


def main(argv):
    # ------------------------------------------------------------------ setup
    hp = parse_overrides(argv)
    check_values(hp)
    config = model_config(hp)
    out_dir = hp["out_dir"]
    distributed = "RANK" in os.environ  # started by torchrun
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    master = rank == 0  # prints, and writes checkpoints, metrics and samples
    log = print if master else lambda *args, **kwargs: None
    device_type = ("cuda" if torch.cuda.is_available() else "cpu") if hp["device"] == "auto" else hp["device"]
    if device_type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device=cuda but no CUDA device is available; use --device=cpu")
    device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if device_type == "cuda" else "cpu"
    if device_type == "cuda":
        torch.cuda.set_device(device)
    if distributed:
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    lock = checkpointing.claim_out_dir(out_dir, hp["resume"]) if master else None
    dtype = hp["dtype"] if hp["dtype"] != "auto" else "bfloat16" if fast_bfloat16(device_type) else "float32"
    autocast = torch.autocast(device_type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    resumed_from, state = None, None
    if hp["resume"] == "auto":
        resumed_from, state = checkpointing.newest_good(out_dir, log)
        if state is None:
            log(f"resume=auto: no good checkpoint in {out_dir}, starting fresh")
    elif hp["resume"]:
        try:
            resumed_from, state = hp["resume"], checkpointing.load(hp["resume"])
        except checkpointing.CheckpointError as e:
            raise SystemExit(f"--resume: {e}") from None
    if state is not None:
        differ = [f"{k} (checkpoint {v!r}, requested {asdict(config)[k]!r})"
                  for k, v in checkpointing.model_config(state).items() if asdict(config).get(k) != v]
        if differ:
            raise SystemExit(f"{resumed_from} was trained with another model config: {'; '.join(differ)}. "
                             f"Pass the checkpoint's values, or start a fresh run in another --out_dir.")
    torch.manual_seed(hp["seed"] + rank)  # DDP copies rank 0's initial weights; dropout differs per rank
    log("hyperparameters:\n" + "\n".join(f"  {k} = {v!r}" for k, v in hp.items()))

    # ------------------------------------------------------------------ data
    segment = int(round(hp["segment_seconds"] * hp["sample_rate"]))
    if distributed and hp["data_dir"] and not master:
        dist.barrier()  # rank 0 decodes the files into the cache first; the others then read it
    tracks = data.run_tracks(hp, log)
    if distributed and hp["data_dir"] and master:
        dist.barrier()
    train_tracks, val_tracks = data.split_by_file(tracks, hp["val_fraction"], hp["seed"])
    train_set = data.PairDataset(train_tracks, segment, hp["shuffle_targets"], hp["seed"])
    val_set = data.PairDataset(val_tracks, segment)
    for name, tracks_, pairs in (("train", train_tracks, train_set), ("val", val_tracks, val_set)):
        log(f"{name}: {len(tracks_)} files, {len(pairs)} pairs, {pairs.minutes(hp['sample_rate']):.1f} min")
    # each rank takes every world-th pair of one seeded permutation per epoch
    sampler = DistributedSampler(train_set, world, rank, shuffle=True, seed=hp["seed"], drop_last=True)
    global_batch = hp["batch_size"] * world
    steps_per_epoch = len(sampler) // hp["batch_size"]
    if steps_per_epoch == 0 or len(val_set) == 0:
        raise SystemExit(f"too little audio: {len(train_set)} training and {len(val_set)} validation pairs for "
                         f"--batch_size={hp['batch_size']} on {world} rank(s); add audio, or lower batch_size or segment_seconds")

    # ------------------------------------------------------------------ model
    codec = MDCTCodec(config.frame_dim).to(device)
    model = Cascade(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    step, start_epoch, start_batch = 0, 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:
            group["lr"], group["weight_decay"] = hp["lr"], hp["weight_decay"]
        step = state["step"]
        start_epoch, start_batch = resume_position(state, steps_per_epoch, global_batch)
        rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]  # one-process checkpoints before DDP
        if len(rngs) == world:
            torch.set_rng_state(rngs[rank]["torch"])
            if device_type == "cuda" and rngs[rank]["cuda"] is not None:
                torch.cuda.set_rng_state(rngs[rank]["cuda"])
        else:
            torch.manual_seed(int(np.random.SeedSequence([hp["seed"], step, rank]).generate_state(1)[0]))
            log(f"the checkpoint comes from {len(rngs)} rank(s), this run has {world}: same weights and optimizer, "
                f"new dropout streams; epoch {start_epoch + 1} continues after its first {start_batch * global_batch} pairs")
        log(f"resumed from {resumed_from} at step {step}")
    train_model = model
    if hp["compile"]:
        log("compile=True: the first step compiles the model with torch.compile (about 30 s on a 2-core CPU)")
        train_model = torch.compile(model)  # checkpoints and the NaN report use the plain model
    if distributed:
        train_model = DistributedDataParallel(train_model, device_ids=[device] if device_type == "cuda" else None)
    total_steps = step + (steps_per_epoch - start_batch) + steps_per_epoch * (hp["epochs"] - start_epoch - 1)
    log(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; batch {hp['batch_size']} x {world} "
        f"rank(s) = {global_batch} pairs per step; {steps_per_epoch} steps/epoch, {total_steps} steps, device {device}, {dtype}")
    metrics = MetricsFile(os.path.join(out_dir, "metrics.csv"), keep_until_step=step) if master else None
    newest, start_step = resumed_from, step

    def save(name, epoch, epoch_step, health):
        """Every rank calls this (the RNG states are gathered); rank 0 writes."""
        nonlocal newest
        rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if device_type == "cuda" else None}
        state = {"format": checkpointing.FORMAT, "model_config": asdict(config), "hyperparameters": hp,
                 "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                 "epoch_step": epoch_step, "global_batch": global_batch, "step": step,
                 "rng": from_every_rank(rng), "health": health}
        newest = os.path.join(out_dir, name)
        if master:
            checkpointing.save(state, newest)
            # only files up to this step are this run's history; anything else is left alone
            ours = [p for p in checkpointing.files(out_dir) if checkpointing.step_of(p) <= step]
            for old in ours[hp["keep_checkpoints"]:]:
                os.remove(old)
        return newest

    def finish(code):
        if distributed:
            dist.barrier()  # torchrun stops every rank once one exits: let rank 0 finish writing first
            dist.destroy_process_group()
        if code:
            sys.exit(code)

    # ------------------------------------------------------------------ the loop
    stop = install_signal_handlers()
    epoch_grad_norms, t_run = [], time.time()
    for epoch in range(start_epoch, hp["epochs"]):
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        order = list(sampler)
        model.train()
        for i in range(start_batch if epoch == start_epoch else 0, steps_per_epoch):
            t0 = time.time()
            x_in, x_tgt = (codec.encode(a.to(device)) for a in train_set.batch(order[i * hp["batch_size"]:(i + 1) * hp["batch_size"]]))
            with autocast:
                out, _ = train_model(x_in, x_tgt)
            loss, terms = blend.objective(out, x_in, x_tgt, codec, hp)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if os.environ.get(TEST_NAN_STEP) == str(step + 1):
                model.stage2.blocks[0].linear2.weight.grad[0, 0] = float("nan")
            try:
                loss, terms, grad_norm = clip_gradients(model, hp["grad_clip"], step + 1, loss.item(), terms,
                                                        lambda: model(x_in, x_tgt), hp["top_k"], newest,
                                                        lambda values: [v / world for v in over_ranks(values, device)])
            except NonFiniteError as e:
                if master:
                    metrics.write(kind="nan_abort", epoch=epoch + 1, step=step + 1, loss=e.loss, grad_norm=e.grad_norm, **e.terms)
                print(f"rank {rank} of {world}: {e}" if distributed else e, file=sys.stderr, flush=True)
                finish(NAN_ABORT_EXIT)
            optimizer.step()
            step += 1
            epoch_grad_norms.append(grad_norm)
            dt = (time.time() - t0) * 1000
            named = ", ".join(f"{name} {value:.4f}" for name, value in terms.items())
            log(f"step {step}/{total_steps} | epoch {epoch + 1} | loss {loss:.4f} ({named}) | grad_norm {grad_norm:.4f} "
                f"| lr {hp['lr']:.2e} | dt {dt:.0f} ms", flush=True)
            if master:
                metrics.write(kind="step", epoch=epoch + 1, step=step, loss=loss, grad_norm=grad_norm, lr=hp["lr"], dt_ms=dt, **terms)
            if step % hp["log_interval"] == 0:
                log(f"top grads: {top_gradients(gradient_norms(model), hp['top_k'])}")
            signum = int(over_ranks([stop.signal or 0], device, dist.ReduceOp.MAX)[0])  # a signal to any rank stops all
            if signum:
                path = save(f"interrupted_epoch_{epoch + 1}_step_{step}.pth", epoch, i + 1, None)
                log(f"{signal.Signals(signum).name}: finished step {step}, saved {path}; "
                    f"continue with --resume=auto", flush=True)
                finish(128 + signum)

        # ------------------------------------------------------------------ end of epoch: health, checkpoint, samples
        health, sample = validate(model, codec, val_set, hp, device, autocast, rank, world)
        lines, warnings = blend.health_lines(health, epoch_grad_norms)
        elapsed = time.time() - t_run
        eta = elapsed / max(step - start_step, 1) * (total_steps - step)
        log(f"epoch {epoch + 1}/{hp['epochs']} | val loss {health['val_loss']:.4f} | {len(warnings)} warnings | "
            f"ETA {eta / 60:.1f} min\n" + "\n".join(lines), flush=True)
        summary = {k: v for k, v in health.items() if np.isscalar(v)}
        path = save(f"epoch_{epoch + 1}_step_{step}.pth", epoch + 1, 0, {**summary, "warnings": warnings})
        if master:
            norms = {"grad_norm_max": max(epoch_grad_norms), "grad_norm_median": float(np.median(epoch_grad_norms))} \
                if epoch_grad_norms else {}  # none when resumed from an interrupt after the epoch's last step
            metrics.write(kind="epoch", epoch=epoch + 1, step=step, warnings=" ".join(warnings), **norms,
                          **{k: v for k, v in health.items() if k in MetricsFile.COLUMNS})
            write_samples(os.path.join(out_dir, "samples"), epoch + 1, sample, hp["sample_rate"])
        log(f"saved {path}")
        epoch_grad_norms = []
    finish(0)
    if lock:
        lock.close()


@torch.no_grad()
def validate(model, codec, val_set, hp, device, autocast, rank=0, world=1):
    """Validation loss, the health numbers and the blend verdict of every validation pair
    (each rank takes its share; sums are all-reduced, verdicts gathered); the fixed first
    pair's audio is returned for the envelope bars and the samples."""
    model.eval()
    names = ("val_loss", "scale1", "scale2", "rms_ratio", "corr_in", "corr_tgt")
    sums, count, judged = [0.0] * len(names), 0, []
    floor, B = hp["rms_floor"], hp["batch_size"]
    for start in range(rank * B, len(val_set), world * B):
        in_audio, tgt_audio = val_set.batch(range(start, min(start + B, len(val_set))))
        x_in, x_tgt = codec.encode(in_audio.to(device)), codec.encode(tgt_audio.to(device))
        with autocast:
            out, stats = model(x_in, x_tgt)
        loss, _ = blend.objective(out, x_in, x_tgt, codec, hp)
        per_pair = {"val_loss": loss.expand(len(out)), "scale1": stats["scale1"], "scale2": stats["scale2"],
                    **blend.output_health(out, x_in, x_tgt, floor)}
        sums = [s + per_pair[name].float().sum().item() for s, name in zip(sums, names)]
        count += len(out)
        out_audio = codec.decode(out, in_audio.shape[1]).cpu().numpy()
        judged += [blend.measure(o, i, t, hp["sample_rate"]) for o, i, t in zip(out_audio, in_audio.numpy(), tgt_audio.numpy())]
    *sums, count = over_ranks([*sums, count], device)
    judged = [m for part in from_every_rank(judged) for m in part]
    in_audio, tgt_audio = val_set.batch([0])
    with autocast:
        out, _ = model(codec.encode(in_audio.to(device)), codec.encode(tgt_audio.to(device)))
    sample = [a[0].cpu().numpy() for a in (in_audio, tgt_audio, codec.decode(out, in_audio.shape[1]))]
    model.train()
    health = {name: s / count for name, s in zip(names, sums)}
    return {**health, **blend.judged_health(judged, sample)}, sample


def write_samples(folder, epoch, sample, sample_rate):
    os.makedirs(folder, exist_ok=True)
    for name, audio in zip(("input", "target", "output"), sample):
        peak = np.abs(audio).max()  # never clip: scale down a too-loud output rather than distort it
        sf.write(os.path.join(folder, f"epoch_{epoch}_{name}.wav"), audio / max(1.0, peak / 0.999), sample_rate, subtype="FLOAT")


class MetricsFile:
    """metrics.csv: one row per step, per epoch and per NaN abort, one header.
    On resume, rows after the resumed step are dropped so the file reads as one run."""

    COLUMNS = ["kind", "epoch", "step", "loss", "follow", "sound", "copy", "novelty", "recon", "grad_norm", "lr", "dt_ms",
               "val_loss", "grad_norm_max", "grad_norm_median", "scale1", "scale2", "rms_ratio", "envelope",
               "corr_in", "corr_tgt", "blend_share", "copy_share", "hiss_share", "warnings"]

    def __init__(self, path, keep_until_step):
        self.path = path
        kept = []
        if keep_until_step and os.path.exists(path):
            with open(path) as f:
                rows = f.read().splitlines()[1:]
            kept = [r for r in rows if r.split(",")[2].isdigit() and int(r.split(",")[2]) <= keep_until_step]
        with open(path, "w") as f:
            f.write("\n".join([",".join(self.COLUMNS)] + kept) + "\n")

    def write(self, **row):
        assert set(row) <= set(self.COLUMNS), set(row) - set(self.COLUMNS)
        with open(self.path, "a") as f:
            f.write(",".join(format_cell(row.get(c, "")) for c in self.COLUMNS) + "\n")


def format_cell(value):
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def install_signal_handlers():
    """SIGINT/SIGTERM only set a flag: the current step finishes, then the loop saves and exits."""
    class Stop:
        signal = None

    def handler(signum, frame):
        Stop.signal = signum

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return Stop


if __name__ == "__main__":
    main(sys.argv[1:])
