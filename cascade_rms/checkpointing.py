"""
Checkpoints and the run folder: what train.py writes, and generate.py, evaluate.py and
plot.py read back.

A checkpoint describes itself (model config, hyperparameters, optimizer, step, every
rank's RNG state), so a model is rebuilt from it alone. It is written to a temporary
file, synced and renamed, so a crash mid-save never harms an earlier one.
"""

import fcntl
import os
from dataclasses import asdict

import numpy as np
import soundfile as sf
import torch

from model import Cascade, CascadeConfig

from . import atomic, data, pianoroll

FORMAT = "cascade-checkpoint-v1"
# model config fields added after the first checkpoints were written, with the values those were
# trained with: the original design's linear head, then the pointer head before its corpus, chroma, continuity
# and optional seek, then the pointer without fine levels
EARLIER_DESIGN = {"head": "linear", "frame_norm": True, "pointer_corpus": "all", "pointer_chroma": 0.0,
                  "pointer_continuity": 0.0, "pointer_seek": True, "pointer_fine": 0.0, "estimate": False}


class CheckpointError(Exception):
    pass


def save(state, path):
    """Written whole or not at all (atomic.written): a crash leaves the old files intact."""
    with atomic.written(path) as partial:
        torch.save(state, partial)


def load(path):
    """Load one of our checkpoints or raise CheckpointError saying why it is not one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or not a torch file): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a checkpoint of this project (no '{FORMAT}' marker)")
    return state


def stored_config(state):
    """The checkpoint's model config; fields it predates take the design it was trained with
    (the rate was a hyperparameter only)."""
    return {**EARLIER_DESIGN, "sample_rate": state["hyperparameters"]["sample_rate"], **state["model_config"]}


def segment_samples(state):
    """The length of the clips the checkpoint's model was trained on, at its rate."""
    return data.seconds_to_samples(state["hyperparameters"]["segment_seconds"], stored_config(state)["sample_rate"])


def model_from(state):
    """The model, rebuilt from the checkpoint alone."""
    model = Cascade(CascadeConfig(**stored_config(state)))
    model.load_state_dict(state["model"])
    return model


def initial_model(config, seed):
    """The model of a config with the weights a run seeded with `seed` starts from (train.py seeds
    rank 0 with the run's seed before building its model)."""
    torch.manual_seed(seed)
    return Cascade(config)


def to_resume(resume, folder, config, log=print):
    """(path, state) of the checkpoint to resume: --resume=auto takes the newest good one in
    folder (none: a fresh start), a path takes that one or fails saying why; (None, None) for
    a fresh run. Fails if the checkpoint's model config differs from config."""
    path, state = None, None
    if resume == "auto":
        path, state = newest_good(folder, log)
        if state is None:
            log(f"resume=auto: no good checkpoint in {folder}, starting fresh")
    elif resume:
        try:
            path, state = resume, load(resume)
        except CheckpointError as e:
            raise SystemExit(f"--resume: {e}") from None
    if state is not None:
        differ = [f"{k} (checkpoint {v!r}, requested {asdict(config)[k]!r})"
                  for k, v in stored_config(state).items() if asdict(config).get(k) != v]
        if differ:
            raise SystemExit(f"{path} was trained with another model config: {'; '.join(differ)}. "
                             f"Pass the checkpoint's values, or start a fresh run in another --out_dir.")
    return path, state


def step_of(path):
    """The step in a checkpoint's name (..._step_S.pth), or None for any other file."""
    tail = os.path.basename(path).rpartition("_step_")[2].removesuffix(".pth")
    return int(tail) if path.endswith(".pth") and "_step_" in path and tail.isdigit() else None


def files(folder):
    """Our checkpoint files in folder, newest (highest step) first."""
    paths = [os.path.join(folder, n) for n in os.listdir(folder) if step_of(n) is not None]
    return sorted(paths, key=lambda p: (-step_of(p), p))


def newest_good(folder, log=print):
    for path in files(folder):
        try:
            return path, load(path)
        except CheckpointError as e:
            log(f"warning: skipping {e}")
    return None, None


# -----------------------------------------------------------------------------
# the run folder


def claim_out_dir(out_dir, resume):
    """Make out_dir writable and ours before any work: one run per folder, and a
    fresh run never mixes its checkpoints with an earlier run's."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise SystemExit(f"--out_dir={out_dir} is a file, not a folder: move it away or choose another --out_dir")
    try:
        os.makedirs(out_dir, exist_ok=True)
        lock = open(os.path.join(out_dir, ".lock"), "a+")
        probe = os.path.join(out_dir, f".write_test.{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise SystemExit(f"cannot write checkpoints to {out_dir}: {e.strerror}. Fix its permissions or choose another --out_dir") from None
    try:  # the kernel drops the lock when its holder dies, so a crashed run never blocks the next
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        raise SystemExit(f"another run (pid {lock.read().strip() or '?'}) is training into {out_dir}; "
                         f"wait for it, stop it, or choose another --out_dir") from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    for name in os.listdir(out_dir):  # half-written saves of a killed run: no one else writes here now
        if atomic.PARTIAL in name:
            os.remove(os.path.join(out_dir, name))
    if not resume and files(out_dir):
        raise SystemExit(f"{out_dir} already holds checkpoints of an earlier run; continue it with --resume=auto, "
                         f"or start a new run with another --out_dir (nothing was deleted)")
    return lock


class MetricsFile:
    """metrics.csv: one row per step, per epoch and per NaN abort, one header.
    On resume, rows after the resumed step are dropped so the file reads as one run."""

    COLUMNS = ["kind", "epoch", "step", "loss", "follow", "sound", "copy", "novelty", "recon", "grad_norm", "lr", "dt_ms",
               "val_loss", "grad_norm_max", "grad_norm_median", "scale1", "scale2", "rms_ratio", "envelope",
               "corr_in", "corr_tgt", "blend_share", "copy_share", "hiss_share", "warnings",
               "unrelated_share", "harmony", "onsets", "truth", "notes", "note_f1", "estimate", "estimate_db"]  # last: rows of runs from before they were added still line up on resume

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


def write_wav(path, audio, sample_rate):
    """A float WAV file, never clipped: a too-loud clip is scaled down rather than distorted."""
    sf.write(path, audio / max(1.0, float(np.abs(audio).max()) / 0.999), sample_rate, subtype="FLOAT")


def write_samples(folder, epoch, sample, sample_rate, hop):
    """An epoch's validation sample (input, target, output audio) as float WAV files, and where
    it has the input's piano roll and its transcription (frames hop samples apart) the two as
    epoch_N_transcription.png."""
    os.makedirs(folder, exist_ok=True)
    for name, audio in zip(("input", "target", "output"), sample):
        write_wav(os.path.join(folder, f"epoch_{epoch}_{name}.wav"), audio, sample_rate)
    if len(sample) == 5:
        pianoroll.write_figure(os.path.join(folder, f"epoch_{epoch}_transcription.png"), *sample[3:], hop / sample_rate,
                               f"(epoch {epoch}'s validation sample)")
