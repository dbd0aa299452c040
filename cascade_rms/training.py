"""
What every script that trains shares: the process (device, dtype, ranks under torchrun),
a batch as the model takes it, the training step with the NaN abort and clipping, resuming,
and validation. train.py is the loop around these; lab/bench.py times the same train_step,
lab/stability.py reruns it under other conditions.
"""

import math
import os
import signal
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from model import Corpus, combined_rms

from . import health_report, notes, objective, verdict

NAN_ABORT_EXIT = 3

# -----------------------------------------------------------------------------
# the process: device, dtype, ranks


def fast_bfloat16(device):
    """bf16 matmuls run several times faster than fp32 on CUDA and on CPUs with
    AVX512-BF16 or AMX (lab/bench.py measures both peaks); elsewhere they are emulated, slower."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


@dataclass
class Process:
    """Where this process runs and which rank it is (rank 0 of 1 without torchrun)."""
    rank: int
    world: int
    device_type: str  # cpu or cuda
    device: str  # cpu or cuda:LOCAL_RANK
    dtype: str  # float32 or bfloat16 (autocast)

    @property
    def distributed(self):
        return dist.is_initialized()

    @property
    def master(self):  # prints, and writes checkpoints, metrics and samples
        return self.rank == 0

    def log(self, *args, **kwargs):
        if self.master:
            print(*args, **kwargs)

    def autocast(self):
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.dtype == "bfloat16")

    def mean(self, values):
        """Floats averaged over ranks (a NaN anywhere is NaN everywhere)."""
        return [v / self.world for v in over_ranks(values, self.device)]

    def finish(self, code):
        """End the process group and exit with code (0: return)."""
        if self.distributed:
            dist.barrier()  # torchrun stops every rank once one exits: let rank 0 finish writing first
            dist.destroy_process_group()
        if code:
            raise SystemExit(code)


def start_process(device, dtype):
    """The Process for a device (auto, cpu, cuda) and dtype (auto, float32, bfloat16); joins the
    process group when started by torchrun."""
    device_type = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if device_type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device=cuda but no CUDA device is available; use --device=cpu")
    device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if device_type == "cuda" else "cpu"
    if device_type == "cuda":
        torch.cuda.set_device(device)
    if "RANK" in os.environ:  # started by torchrun
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    dtype = dtype if dtype != "auto" else "bfloat16" if fast_bfloat16(device_type) else "float32"
    return Process(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), device_type, device, dtype)


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


def install_signal_handlers():
    """SIGINT/SIGTERM only set a flag: the current step finishes, then the loop saves and exits."""
    class Stop:
        signal = None

    def handler(signum, frame):
        Stop.signal = signum

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return Stop


# -----------------------------------------------------------------------------
# the step and the NaN abort


class NonFiniteError(Exception):
    """Raised before the optimizer step; its message is the full report."""

    def __init__(self, report, loss, terms, grad_norm):
        super().__init__(report)
        self.loss, self.terms, self.grad_norm = loss, terms, grad_norm


def gradient_norms(model):
    return {name: p.grad.norm().item() for name, p in model.named_parameters() if p.grad is not None}


def largest_gradients(norms, k):
    """The k largest finite gradient norms, largest first. # [(name, norm)]"""
    return sorted(((name, norm) for name, norm in norms.items() if math.isfinite(norm)), key=lambda kv: -kv[1])[:k]


def top_gradients(norms, k):
    return ", ".join(f"{name} ({norm:.3g})" for name, norm in largest_gradients(norms, k))


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
    raise NonFiniteError("\n".join([
        f"NaN abort at step {step}: loss {loss:.6g}, grad_norm {grad_norm:.6g}; the weights were not updated",
        "  loss terms: " + ", ".join(f"{k} {v:.6g}" for k, v in terms.items()),
        f"  non-finite gradients ({len(bad)}): " + (", ".join(bad) or "none"),
        f"  top grads (finite): {top_gradients(norms, top_k)}",
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


def optimizer_for(model, lr, weight_decay):
    """AdamW, fused: one kernel for all parameters instead of a loop over them (lab/bench.py times it).
    Two parameter groups, stage 1's and the rest, so that a phase of a run can train one alone
    (train.py sets each group's lr every step)."""
    stage1 = [p for name, p in model.named_parameters() if name.startswith("stage1.")]
    rest = [p for name, p in model.named_parameters() if not name.startswith("stage1.")]
    return torch.optim.AdamW([{"params": stage1}, {"params": rest}], lr=lr, weight_decay=weight_decay, fused=True)


@dataclass
class StepConfig:
    """What a training step needs besides the model and the batch; train.py's block sets every field
    (hyperparameters.section)."""
    grad_clip: float  # max-norm of the total gradient
    top_k: int  # parameters the NaN report lists


# what a material's Corpus keeps besides its audio
DESCRIPTION = ("power", "chroma", "allowed", "fine_power", "mel", "spectra", "mel_level")


def encode(model, codec, batch, device, corpora, rolls=None):
    """A data.Batch as the model takes it: input and target frames (B, D, T), and for triplets
    each clip's material as a Corpus for the pointer heads (None for pairs or the linear head).
    corpora: a dict that keeps each material's description by its key across calls: a run plays
    the same few materials every epoch, and describing one costs as much as a step's matmuls. With
    estimate a description holds the material's spectra fitted through the notes it was described
    with: stage 1's as they were then, or rolls ((B, M // D + 1, N_KEYS): each material's piano
    roll, its notes known; Cascade.describe's roll). A dict serves one stage 1 and one source of notes."""
    x_in, x_tgt = codec.encode(batch.inputs.to(device)), codec.encode(batch.targets.to(device))
    if batch.materials is None or model.config.head != "pointer":
        return x_in, x_tgt, None
    materials, lengths = batch.materials.to(device), batch.material_lengths.to(device)
    missing = [i for i, key in enumerate(batch.material_keys) if key not in corpora]
    if missing:
        known = rolls[missing].to(device) if rolls is not None else None
        described = model.describe(materials[missing], lengths[missing], known)
        for j, i in enumerate(missing):
            corpora[batch.material_keys[i]] = {name: getattr(described, name)[j] for name in DESCRIPTION
                                               if getattr(described, name) is not None}
    kept = [corpora[key] for key in batch.material_keys]
    return x_in, x_tgt, Corpus(materials, **{name: torch.stack([k[name] for k in kept]) for name in kept[0]})


def truth_levels(model, codec, batch, x_in, x_tgt, corpus, device):
    """For triplets, what objective's truth terms ask for, those the model has: with pointer_fine
    the ground truth's fine levels frame by frame at the clip's unit level as Cascade sees it
    ("fine", (B, T, fine_bands)); with estimate its mel spectrum in dB at the corpus's unit
    level, as NoteSpectra describes it ("mel", (B, T, N_MELS)). None for pairs."""
    if batch.truths is None:
        return None
    truth, truths = {}, batch.truths.to(device)
    with torch.no_grad():
        if model.config.head == "pointer" and model.config.pointer_fine:
            level = combined_rms(x_in, x_tgt, model.config.rms_floor)
            truth["fine"] = model.stage1.pointer.fine_levels(codec.encode(truths) / level)
        if model.config.estimate:
            truth["mel"] = model.note_spectra.mel_db(model.note_spectra.power(truths / corpus.mel_level[:, None]))
    return truth or None


def train_step(model, train_model, optimizer, codec, x_in, x_tgt, weights, step_config, process, step, newest_checkpoint,
               corpus=None, truth=None, rolls=None, notes_only=False):
    """One optimizer step on a batch of frames (and, for triplets, each clip's corpus and the
    input's piano roll): forward (train_model: compiled or DDP-wrapped), the objective
    (objective.LossWeights), backward, the NaN abort, clipping, AdamW. notes_only: stage 1's
    transcription alone, its loss the note term. Returns the loss, its terms and the pre-clip
    gradient norm, averaged over ranks; raises NonFiniteError instead of stepping."""
    with process.autocast():
        out, stats = train_model(x_in, x_tgt, corpus, notes_only=notes_only)
    if notes_only:
        loss = objective.notes_loss(stats["notes"], rolls)
        terms = {"notes": loss.item()}
    else:
        loss, terms = objective.objective(out, x_in, x_tgt, codec, weights, model.config, stats, truth, rolls)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    loss, terms, grad_norm = clip_gradients(model, step_config.grad_clip, step, loss.item(), terms,
                                            lambda: model(x_in, x_tgt, corpus, notes_only=notes_only), step_config.top_k,
                                            newest_checkpoint, process.mean)
    optimizer.step()
    return loss, terms, grad_norm


# -----------------------------------------------------------------------------
# resuming


def resume_position(state, steps_per_epoch, global_batch):
    """(epoch, batches of it done) to continue from. A run resumed with another global
    batch (other world size) skips the pairs its epoch has already seen, rounding up."""
    epoch = state["epoch"]
    done = state.get("epoch_step", state["step"] - epoch * steps_per_epoch)  # one-process checkpoints before DDP
    saved_batch = state.get("global_batch", state["hyperparameters"]["batch_size"])
    return epoch, -(-done * saved_batch // global_batch)


def restore(state, model, optimizer, process, steps_per_epoch, global_batch, seed):
    """Weights, optimizer and this rank's RNG from a checkpoint; the optimizer keeps the lr and
    weight decay it was built with (this run's). Returns (step, epoch, batch) to go on from."""
    hyperparameters = [{k: group[k] for k in ("lr", "weight_decay")} for group in optimizer.param_groups]
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    for group, values in zip(optimizer.param_groups, hyperparameters):
        group.update(values)
    step = state["step"]
    epoch, batch = resume_position(state, steps_per_epoch, global_batch)
    rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]  # one-process checkpoints before DDP
    if len(rngs) == process.world:
        torch.set_rng_state(rngs[process.rank]["torch"])
        if process.device_type == "cuda" and rngs[process.rank]["cuda"] is not None:
            torch.cuda.set_rng_state(rngs[process.rank]["cuda"])
    else:
        torch.manual_seed(int(np.random.SeedSequence([seed, step, process.rank]).generate_state(1)[0]))
        process.log(f"the checkpoint comes from {len(rngs)} rank(s), this run has {process.world}: same weights and "
                    f"optimizer, new dropout streams; epoch {epoch + 1} continues after its first {batch * global_batch} pairs")
    return step, epoch, batch


def rng_state(process):
    """Every rank's RNG state, for a checkpoint (every rank must call this)."""
    cuda = torch.cuda.get_rng_state() if process.device_type == "cuda" else None
    return from_every_rank({"torch": torch.get_rng_state(), "cuda": cuda})


# -----------------------------------------------------------------------------
# validation


@torch.no_grad()
def validate(model, codec, val_set, weights, batch_size, process, corpora):
    """Validation loss, the health numbers and the blend verdict of every validation pair
    (each rank takes its share; sums are all-reduced, verdicts gathered); the fixed first
    pair's audio is returned for the envelope bars and the samples."""
    model.eval()
    names = ("val_loss", "scale1", "scale2", "rms_ratio", "corr_in", "corr_tgt")
    sums, count, judged, note_counts, estimate_db = [0.0] * len(names), 0, [], np.zeros(3), 0.0
    B, device, config = batch_size, process.device, model.config
    for start in range(process.rank * B, len(val_set), process.world * B):
        batch = val_set.batch(range(start, min(start + B, len(val_set))))
        x_in, x_tgt, corpus = encode(model, codec, batch, device, corpora)
        with process.autocast():
            out, stats = model(x_in, x_tgt, corpus)
        rolls = batch.rolls.to(device) if batch.rolls is not None and "notes" in stats else None
        loss, _ = objective.objective(out, x_in, x_tgt, codec, weights, config, stats, None, rolls)
        if rolls is not None:
            note_counts += notes.f1_counts(*(notes.on_16ms_grid(r).cpu().numpy() for r in (stats["notes"] > 0, rolls > 0.5)))
        if "estimate" in stats and batch.truths is not None:
            truth = truth_levels(model, codec, batch, x_in, x_tgt, corpus, device)["mel"]
            estimate_db += objective.estimate_distance(stats["estimate"], truth).sum().item()
        per_pair = {"val_loss": loss.expand(len(out)), "scale1": stats["scale1"], "scale2": stats["scale2"],
                    **health_report.output_health(out, x_in, x_tgt, config.rms_floor)}
        sums = [s + per_pair[name].float().sum().item() for s, name in zip(sums, names)]
        count += len(out)
        out_audio = codec.decode(out, batch.inputs.shape[1]).cpu().numpy()
        judged += [verdict.blend_metrics(o, i, t, config.sample_rate)
                   for o, i, t in zip(out_audio, batch.inputs.numpy(), batch.targets.numpy())]
    reduced = over_ranks([*sums, count, *note_counts, estimate_db], device)
    sums, count, note_counts, estimate_db = reduced[: len(names)], reduced[len(names)], reduced[len(names) + 1 : -1], reduced[-1]
    judged = [m for part in from_every_rank(judged) for m in part]
    batch = val_set.batch([0])
    with process.autocast():
        out, stats = model(*encode(model, codec, batch, device, corpora))
    sample = [a[0].cpu().numpy() for a in (batch.inputs, batch.targets, codec.decode(out, batch.inputs.shape[1]))]
    if batch.rolls is not None and "notes" in stats:  # the score's roll and the transcription's probabilities
        sample += [batch.rolls[0].numpy(), stats["notes"][0].float().sigmoid().cpu().numpy()]
    model.train()
    health = {name: s / count for name, s in zip(names, sums)}
    if sum(note_counts):
        health["note_f1"] = notes.f1(note_counts)
    if estimate_db:
        health["estimate_db"] = estimate_db / count
    return {**health, **health_report.judged_health(judged, sample[:3])}, sample

