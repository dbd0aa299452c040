"""
Train the two-stage cascade on triplets of rendered scores (input, target material, the right
answer), or on pairs of clips of the demo music or your audio (segment k -> segment k+1).

    python train.py                        # Bach chorales rendered with General MIDI instruments
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
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from cascade_rms import checkpointing, data, health_report, hyperparameters, notes, objective, scores, training
from model import Cascade, CascadeConfig, MDCTCodec

# ----------------------------------------------------------------------------- hyperparameters
# data
dataset = "scores"  # scores: scores rendered with two instruments, so each input has a right answer; demo: synthetic songs
data_dir = ""  # a folder of your audio (searched recursively): trains on it instead of dataset, with no right answer
segment_seconds = 2.0  # length of one clip
val_fraction = 0.15  # demo and data_dir: share of songs or files held out for validation
score_dir = ""  # scores: a folder of your MIDI/MusicXML files; "" = Bach chorales that ship with music21
score_pieces = 100  # scores: how many chorales (with score_dir: every file)
val_pieces = 4  # scores: pieces held out for validation, chosen by seed
soundfont = ""  # scores: a .sf2/.sf3 file; "" = TimGM6mb, the General MIDI SoundFont in pretty_midi's wheel
train_programs = "melodic"  # scores: General MIDI programs of training, comma-separated; melodic = 0-111 less val_programs
val_programs = "19,42,73"  # scores: programs held out for validation (organ, cello, flute)
score_seconds = 30.0  # scores: each piece's first seconds (0: whole pieces)
material_seconds = 20.0  # scores: how much of the target's piece the pointer heads may play from
epoch_triplets = 136  # scores: training triplets drawn afresh for each cascade epoch (0: every segment of every piece)
shuffle_targets = False  # demo and data_dir: pair each input with a segment of another file
demo_pieces = 24  # demo: synthetic songs generated, train + validation
demo_seconds = 24.0  # demo: length of each song
cache_dir = ".cache/audio"  # your audio decoded, and scores rendered, once
# model: every field of CascadeConfig (model.py, with its defaults and what each does) is a
# hyperparameter too: set one here (n_layer = 4) or on the command line (--n_layer=4)
# transcription: stage 1 learns which notes sound (scores only)
transcribe_epochs = 4  # the run's first epochs train stage 1's transcription alone, on excerpts rendered afresh
transcribe_steps = 250  # steps in each of them
transcribe_batch = 8  # excerpts per step, per rank: with as many excerpts in twice the steps, 8 beat 16 (held-out F1 0.740 to 0.729: docs/LOG.md)
transcribe_lr = 2e-3  # at the first transcription step, decaying along a half cosine to 0 at the last
augment_gain_db = 12.0  # each excerpt's gain within +-this
augment_tilt_db = 3.0  # and its spectrum tilted within +-this per octave,
augment_bell_db = 9.0  # with three bell-shaped boosts or cuts within +-this: timbre is never a cue to notes
# after each transcription epoch, each program is drawn as often as (1 - its frame F1 on training
# excerpts) ** program_focus: the timbres transcribed worst most; 0: uniformly (3 helped the organ,
# cost the cello and flute more, and lowered held-out F1: docs/LOG.md)
program_focus = 0.0
focus_excerpts = 2  # training excerpts per program that measure its F1 for program_focus
# loss
notes_weight = 1.0  # scores: stage 1's note logits against the score's piano roll (binary cross-entropy)
follow_weight = 1.0  # the output's band levels follow the input's, frame by frame
sound_weight = 1.0  # the output's average spectrum is the target's: its instruments and key
harmony_weight = 0.0  # the output's pitch classes are the input's, frame by frame (docs/LOG.md: no better at 1)
onsets_weight = 0.0  # the output's notes start where the input's do, by spectral flux (docs/LOG.md: no better at 1)
copy_weight = 1.0  # hinge on the output's waveform correlation with either source, at any lag within 0.5 s
copy_margin = 0.3  # correlation the copy term allows
novelty_weight = 0.0  # the original design's term: squared lag-0 correlation with input and target (the original design's 0.85)
recon_weight = 0.0  # the original design's term: relative error to the target (its remedy: 0.01-0.05)
truth_weight = 0.0  # scores: the fine levels the heads seek learn the ground truth's (needs pointer_fine > 0)
estimate_weight = 1.0  # scores: stage 2's refined estimate of the truth's mel spectrum against the truth's (needs estimate)
# optimizer
# cascade epochs: every weight (after transcription epochs with estimate: stage 2 alone, at refine_lr)
lr = 1e-4
refine_lr = 2e-3  # scores with estimate: stage 2's in the cascade epochs, decaying along a half cosine to 0 at the last
weight_decay = 0.01
grad_clip = 1.0  # max-norm of the total gradient
batch_size = 8  # pairs per step, per rank under torchrun
# run
epochs = 6
seed = 1337
out_dir = "checkpoints"
keep_checkpoints = 3  # newest checkpoints kept; older ones are deleted
resume = ""  # "" = fresh run, "auto" = newest good checkpoint in out_dir, or a path
log_interval = 10  # steps between "top grads" lines
top_k = 5  # parameters listed in "top grads"
device = "auto"  # auto, cpu, cuda
dtype = "auto"  # float32, bfloat16 (autocast; RMS, losses and AdamW stay float32), or auto: bfloat16 where matmuls are fast in it
compile = False  # torch.compile the model: for GPUs; on a small CPU the compile costs more than it saves (lab/bench.py --compile)
# -----------------------------------------------------------------------------
HYPERPARAMETERS = hyperparameters.of_script(__file__)  # the block above, after CascadeConfig's fields


def main(argv):
    # ------------------------------------------------------------------ setup
    hp = hyperparameters.parse_overrides(argv, HYPERPARAMETERS)
    hyperparameters.check_values(hp)
    config = hyperparameters.cascade_config(hp)
    process = training.start_process(hp["device"], hp["dtype"])
    log = process.log
    lock = checkpointing.claim_out_dir(hp["out_dir"], hp["resume"]) if process.master else None
    resumed_from, state = checkpointing.to_resume(hp["resume"], hp["out_dir"], config, log)
    torch.manual_seed(hp["seed"] + process.rank)  # DDP copies rank 0's initial weights; dropout differs per rank
    log("hyperparameters:\n" + "\n".join(f"  {k} = {v!r}" for k, v in hp.items()))

    # ------------------------------------------------------------------ data
    train_set, val_set, note_clips = load_data(hp, process)
    transcribe_epochs = hp["transcribe_epochs"] if note_clips and config.notes else 0
    # each rank takes every world-th pair of one seeded permutation per epoch
    sampler = DistributedSampler(train_set, process.world, process.rank, shuffle=True, seed=hp["seed"], drop_last=True)
    steps_per_epoch = len(sampler) // hp["batch_size"]
    if steps_per_epoch == 0 or len(val_set) == 0:
        raise SystemExit(f"too little audio: {len(train_set)} training and {len(val_set)} validation pairs for "
                         f"--batch_size={hp['batch_size']} on {process.world} rank(s); add audio, or lower batch_size "
                         f"or segment_seconds")

    # ------------------------------------------------------------------ model
    codec = MDCTCodec(config.frame_dim).to(process.device)
    model = Cascade(config).to(process.device)
    optimizer = training.optimizer_for(model, hp["lr"], hp["weight_decay"])
    step, start_epoch, start_batch = 0, 0, 0
    if state is not None:
        step, start_epoch, start_batch = training.restore(state, model, optimizer, process, steps_per_epoch,
                                                            hp["batch_size"] * process.world, hp["seed"])
        log(f"resumed from {resumed_from} at step {step}")
        if note_clips is not None and state.get("program_weights") is not None:  # program_focus's, as they were
            note_clips.weights = np.array(state["program_weights"])

    def steps_in(epoch):  # transcription epochs, then cascade epochs
        return hp["transcribe_steps"] if epoch < transcribe_epochs else steps_per_epoch

    train_model = model  # what the step runs; checkpoints and the NaN report use the plain model
    if hp["compile"]:
        log("compile=True: the first step compiles the model with torch.compile (about 30 s on a 2-core CPU)")
        train_model = torch.compile(model)
    if process.distributed:
        device_ids = [process.device] if process.device_type == "cuda" else None
        # a transcription step leaves stage 2 out, and a pair, which has no notes, the note head
        train_model = DistributedDataParallel(train_model, device_ids=device_ids, find_unused_parameters=config.notes)
    total_steps = step - start_batch + sum(steps_in(epoch) for epoch in range(start_epoch, hp["epochs"]))
    if transcribe_epochs:
        log(f"epochs 1-{min(transcribe_epochs, hp['epochs'])} train stage 1's transcription alone: {hp['transcribe_steps']} "
            f"steps of {hp['transcribe_batch']} excerpts x {process.world} rank(s), lr {hp['transcribe_lr']:.0e}")
    log(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; batch {hp['batch_size']} x "
        f"{process.world} rank(s) = {hp['batch_size'] * process.world} pairs per step; {steps_per_epoch} steps/epoch, "
        f"{total_steps} steps, device {process.device}, {process.dtype}")
    metrics = checkpointing.MetricsFile(os.path.join(hp["out_dir"], "metrics.csv"), step) if process.master else None
    weights = hyperparameters.section(objective.LossWeights, hp)
    step_config = hyperparameters.section(training.StepConfig, hp)
    run = Run(hp, config, weights, step_config, process, codec, model, train_model, optimizer, train_set, val_set,
              sampler, metrics, step, resumed_from, note_clips, transcribe_epochs)
    loop(run, start_epoch, start_batch, steps_in, total_steps)
    process.finish(0)
    if lock:
        lock.close()


def load_data(hp, process):
    """The run's training and validation sets: triplets of rendered scores, or pairs of the demo
    music or of the user's audio (rank 0 reads or decodes into the cache first); and for scores
    the excerpts the transcription epochs draw (notes.NoteClips), else None."""
    if process.distributed and not process.master:
        dist.barrier()  # the others wait, then read the cache rank 0 wrote
    if hp["data_dir"] or hp["dataset"] == "demo":
        tracks = data.run_tracks(hyperparameters.section(data.DataConfig, hp), process.log)
        segment = data.seconds_to_samples(hp["segment_seconds"], hp["sample_rate"])
        train_tracks, val_tracks = data.split_by_file(tracks, hp["val_fraction"], hp["seed"])
        train_set = data.PairDataset(train_tracks, segment, hp["shuffle_targets"], hp["seed"])
        val_set = data.PairDataset(val_tracks, segment)
        sizes, units, note_clips = (len(train_tracks), len(val_tracks)), ("files", "pairs"), None
    else:
        train_set, val_set = scores.triplet_sets(hyperparameters.section(scores.ScoresConfig, hp), process.log)
        sizes, units = (len(train_set.pieces), len(val_set.pieces)), ("pieces", "triplets")
        augment = notes.Augment(gain_db=hp["augment_gain_db"], tilt_db=hp["augment_tilt_db"], bell_db=hp["augment_bell_db"])
        note_clips = notes.NoteClips(train_set.renderer, train_set.scores, train_set.programs, train_set.segment,
                                     hp["frame_dim"], augment)
    if process.distributed and process.master:
        dist.barrier()
    for name, n, examples in (("train", sizes[0], train_set), ("val", sizes[1], val_set)):
        process.log(f"{name}: {n} {units[0]}, {len(examples)} {units[1]}, {examples.minutes(hp['sample_rate']):.1f} min")
    return train_set, val_set, note_clips


@dataclass
class Run:
    """What the loop works with, and where it stands."""
    hp: dict
    config: CascadeConfig
    weights: objective.LossWeights
    step_config: training.StepConfig
    process: training.Process
    codec: MDCTCodec
    model: Cascade
    train_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    train_set: data.PairDataset | scores.TripletDataset
    val_set: data.PairDataset | scores.TripletDataset
    sampler: DistributedSampler
    metrics: checkpointing.MetricsFile
    step: int
    newest: str  # the newest checkpoint written or resumed from
    note_clips: notes.NoteClips | None  # what transcription epochs train on
    transcribe_epochs: int
    corpora: dict = field(default_factory=dict)  # each training material's description (training.encode)


def loop(run, start_epoch, start_batch, steps_in, total_steps):
    hp, process, log = run.hp, run.process, run.process.log
    stop = training.install_signal_handlers()
    grad_norms, t_run, start_step = [], time.time(), run.step
    for epoch in range(start_epoch, hp["epochs"]):
        transcribing = epoch < run.transcribe_epochs
        run.train_set.set_epoch(epoch)
        run.sampler.set_epoch(epoch)
        order = list(run.sampler)
        run.model.train()
        for i in range(start_batch if epoch == start_epoch else 0, steps_in(epoch)):
            t0 = time.time()
            lrs = group_lrs(hp, run, epoch, i, steps_in(epoch))
            for group, group_lr in zip(run.optimizer.param_groups, lrs):
                group["lr"] = group_lr
            lr = max(lrs)
            if transcribing:  # every rank its own excerpts, the same again on resuming
                excerpts = run.note_clips.batch(hp["transcribe_batch"], np.random.default_rng([hp["seed"], epoch, i, process.rank]))
                x_in, x_tgt, rolls = (t.to(process.device) for t in excerpts)
                x_in, x_tgt, corpus, truth = run.codec.encode(x_in), run.codec.encode(x_tgt), None, None
            else:
                batch = run.train_set.batch(order[i * hp["batch_size"]:(i + 1) * hp["batch_size"]])
                # the material's spectra fitted through its score's notes: stage 1's transcription of 20 s of
                # material costs 2 s a step, more than the step itself (docs/LOG.md)
                x_in, x_tgt, corpus = training.encode(run.model, run.codec, batch, process.device, run.corpora,
                                                      batch.material_rolls)
                truth = training.truth_levels(run.model, run.codec, batch, x_in, x_tgt, corpus, process.device)
                rolls = batch.rolls.to(process.device) if batch.rolls is not None else None
            try:
                loss, terms, grad_norm = training.train_step(run.model, run.train_model, run.optimizer, run.codec, x_in,
                                                             x_tgt, run.weights, run.step_config, process, run.step + 1,
                                                             run.newest, corpus, truth, rolls, transcribing)
            except training.NonFiniteError as e:
                if process.master:
                    run.metrics.write(kind="nan_abort", epoch=epoch + 1, step=run.step + 1, loss=e.loss,
                                      grad_norm=e.grad_norm, **e.terms)
                print(f"rank {process.rank} of {process.world}: {e}" if process.distributed else e, file=sys.stderr, flush=True)
                process.finish(training.NAN_ABORT_EXIT)
            run.step += 1
            grad_norms.append(grad_norm)
            dt = (time.time() - t0) * 1000
            named = ", ".join(f"{name} {value:.4f}" for name, value in terms.items())
            log(f"step {run.step}/{total_steps} | epoch {epoch + 1} | loss {loss:.4f} ({named}) | grad_norm {grad_norm:.4f} "
                f"| lr {lr:.2e} | dt {dt:.0f} ms", flush=True)
            if process.master:
                run.metrics.write(kind="step", epoch=epoch + 1, step=run.step, loss=loss, grad_norm=grad_norm, lr=lr,
                                  dt_ms=dt, **terms)
            if run.step % hp["log_interval"] == 0:
                log(f"top grads: {training.top_gradients(training.gradient_norms(run.model), hp['top_k'])}")
            signum = int(training.over_ranks([stop.signal or 0], process.device, dist.ReduceOp.MAX)[0])  # one rank's: all stop
            if signum:
                path = save(run, f"interrupted_epoch_{epoch + 1}_step_{run.step}.pth", epoch, i + 1, None)
                log(f"{signal.Signals(signum).name}: finished step {run.step}, saved {path}; continue with --resume=auto",
                    flush=True)
                process.finish(128 + signum)
        eta = (time.time() - t_run) / max(run.step - start_step, 1) * (total_steps - run.step)
        end_of_epoch(run, epoch, grad_norms, eta)
        grad_norms = []


def group_lrs(hp, run, epoch, i, steps):
    """The lr of stage 1's parameter group and of the rest's at step i of the epoch: in transcription
    epochs stage 1's alone; in the cascade epochs after them, with estimate, stage 2's refinement
    alone, at refine_lr (at a cascade lr stage 1's held-out F1 fell from 0.743 to 0.724 in one
    epoch: docs/LOG.md); otherwise every weight at lr."""
    if epoch < run.transcribe_epochs:
        return half_cosine(hp["transcribe_lr"], epoch * hp["transcribe_steps"] + i, run.transcribe_epochs * hp["transcribe_steps"]), 0.0
    if run.transcribe_epochs and run.config.estimate:
        cascade_epochs = hp["epochs"] - run.transcribe_epochs
        return 0.0, half_cosine(hp["refine_lr"], (epoch - run.transcribe_epochs) * steps + i, cascade_epochs * steps)
    return hp["lr"], hp["lr"]


def half_cosine(peak, step, steps):
    """The lr of a phase of `steps` steps: peak at its first step, decaying along a half cosine to 0
    after its last. Held at 2e-3 through the transcription epochs, held-out F1 wandered (0.700,
    0.741, 0.719 after epochs 2-4) where the decay climbs (0.720, 0.736, 0.743: docs/LOG.md)."""
    return peak * 0.5 * (1 + math.cos(math.pi * step / steps))


def end_of_epoch(run, epoch, grad_norms, eta):
    """Validation and the health report, a checkpoint, the metrics row and the samples."""
    hp, process = run.hp, run.process
    # the validation materials described afresh: their spectra are fitted through stage 1's notes as they are now
    health, sample = training.validate(run.model, run.codec, run.val_set, run.weights, hp["batch_size"], process, {})
    lines, warnings = health_report.health_lines(health, grad_norms)
    process.log(f"epoch {epoch + 1}/{hp['epochs']} | val loss {health['val_loss']:.4f} | {len(warnings)} warnings | "
                f"ETA {eta / 60:.1f} min\n" + "\n".join(lines), flush=True)
    summary = {k: v for k, v in health.items() if np.isscalar(v)}
    if run.note_clips is not None and hp["program_focus"] and epoch + 1 < run.transcribe_epochs:  # before the save: resumable
        f1s = notes.program_f1(run.model, run.codec, run.note_clips, hp["focus_excerpts"], np.random.default_rng([hp["seed"], epoch]))
        run.note_clips.weights = notes.focus_weights(f1s, hp["program_focus"])
        drawn = sorted(zip(run.note_clips.weights, f1s.items()), reverse=True)[:5]
        process.log(f"epoch {epoch + 2} draws most: " + ", ".join(f"program {p} (F1 {f:.2f}, {w * len(f1s):.1f}x)"
                                                                   for w, (p, f) in drawn))
    path = save(run, f"epoch_{epoch + 1}_step_{run.step}.pth", epoch + 1, 0, {**summary, "warnings": warnings})
    if process.master:
        norms = {"grad_norm_max": max(grad_norms), "grad_norm_median": float(np.median(grad_norms))} \
            if grad_norms else {}  # none when resumed from an interrupt after the epoch's last step
        run.metrics.write(kind="epoch", epoch=epoch + 1, step=run.step, warnings=" ".join(warnings), **norms,
                          **{k: v for k, v in health.items() if k in checkpointing.MetricsFile.COLUMNS})
        checkpointing.write_samples(os.path.join(hp["out_dir"], "samples"), epoch + 1, sample, hp["sample_rate"],
                                    hp["frame_dim"])
    process.log(f"saved {path}")


def save(run, name, epoch, epoch_step, health):
    """Every rank calls this (the RNG states are gathered); rank 0 writes."""
    hp = run.hp
    state = {"format": checkpointing.FORMAT, "model_config": asdict(run.config), "hyperparameters": hp,
             "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(), "epoch": epoch,
             "epoch_step": epoch_step, "global_batch": hp["batch_size"] * run.process.world, "step": run.step,
             "rng": training.rng_state(run.process), "health": health,
             "program_weights": None if run.note_clips is None or run.note_clips.weights is None else run.note_clips.weights.tolist()}
    run.newest = os.path.join(hp["out_dir"], name)
    if run.process.master:
        checkpointing.save(state, run.newest)
        # only files up to this step are this run's history; anything else is left alone
        ours = [p for p in checkpointing.files(hp["out_dir"]) if checkpointing.step_of(p) <= run.step]
        for old in ours[hp["keep_checkpoints"]:]:
            os.remove(old)
    return run.newest


if __name__ == "__main__":
    main(sys.argv[1:])
