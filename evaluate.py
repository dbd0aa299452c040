"""
How good is the output? Judge a checkpoint against the right answer where there is one, and
against its input and target where there is none.

    python evaluate.py --ckpt checkpoints/epoch_6_step_1034.pth       # trained on rendered scores: the ground truth
    python evaluate.py --ckpt ... --soundfont=OTHER.sf2   # the held-out triplets rendered with another SoundFont
    python evaluate.py --ckpt ... --data_dir=~/music      # pairs of your music, which have no truth
    python evaluate.py --ckpt ... --csv=eval.csv          # also the rows' metrics and the paired comparison as CSV
    python evaluate.py --ckpt ... --audio=DIR --audio_clips=3,20  # also those clips' audio, every system's
    python evaluate.py --ckpt ... --html=DIR              # also a listening page: DIR/index.html, 8 clips
    python evaluate.py --input a.wav --target b.wav --output out.wav   # one file, e.g. what generate.py wrote

Every mode makes a Report the same way: every system's metrics on every clip, the tables, the
clips kept for --audio and --html; main() prints and writes it. The modes:
  ground truth  a checkpoint trained on rendered scores, on its held-out triplets (pieces and
                programs no training triplet used): stage 1's frame F1, then log-spectral
                distance, chroma, onset F and MFCC against the truth, beside the systems that
                learn nothing (fresh weights, random grains, Let it Bee (Driedger et al. 2015)),
                the copies of input and target and the oracle; the gap to the oracle; the paired
                comparison
  pairs         a checkpoint on pairs of recorded music (its validation files, or --data_dir):
                the blend verdicts, content against the input, timbre against the target, seams;
                beside the same systems and references built from the pair (copies, the 50/50
                mix, a delayed copy, noises, a segment of another file); the paired comparison
  one file      an output file against its input and target, beside those references

Paired comparisons give the median difference per clip, its bootstrap 95% interval and the share
of clips where the trained model is better.
"""

import argparse
import copy
import csv
import os
import sys
from dataclasses import dataclass, field, replace

import numpy as np
import soundfile as sf
import torch
import torch.nn as nn
import torch.nn.functional as F

from cascade_rms import (
    baselines,
    checkpointing,
    comparison,
    data,
    groundtruth,
    hyperparameters,
    listening,
    notes,
    pianoroll,
    quality,
    scores,
    target_files,
    training,
    verdict,
)
from model import CascadeConfig, MDCTCodec

TEXTURE = ("max_corr", "envelope", "persistence", "motion", "fill", "flatness", "dist_in", "dist_tgt", "dist_mix",
           "spectrum_span")
# content vs input, timbre vs target (MFCC and average spectrum), seams; and which way is better
QUALITY = {"chroma_in": True, "onset_f_in": True, "mfcc_tgt": False, "dist_tgt": False, "extra_onsets": False,
           "grid_onsets": False}
TRAINED, UNTRAINED = "trained model", "untrained model"
# a checkpoint whose stage 2 plays toward an estimate of the truth (estimate): its design's ceiling, with the
# scores' true notes in place of stage 1's; the fixed fit alone; and the choice rule before it, fresh weights
TRUE_NOTES, REFINEMENT_OFF, NEAREST = "trained, true notes", "trained, refinement off", "nearest-neighbour head"
TRAINING_PROGRAMS_SHOWN = 12  # training programs whose F1 on the held-out pieces shows the transfer gap
TRUTH, ORACLE = "ground truth", "oracle"  # rendered scores: the right answer, and the grains nearest it
LEARNS_NOTHING = (UNTRAINED, NEAREST, "random grains", "Let it Bee")  # the gap to the oracle is measured from the nearest
COMPARED = (UNTRAINED, NEAREST, "random grains", "Let it Bee", "50/50 mix")  # the paired table's baselines, those present
PAGE_CLIPS = ("input", "target", TRAINED, *COMPARED)  # a listening page's columns, those present


@dataclass
class Report:
    """What every mode returns, for main() to print and write the same way."""
    rows: dict  # {system: [metrics of each clip]}
    text: str  # the tables
    title: str  # the listening page's
    page: list  # the listening page's rows (listening.write_page); [] without --html
    rate: int = CascadeConfig.sample_rate  # of the kept clips' audio
    kept: dict = field(default_factory=dict)  # {clip: {name: audio}}: the clips --audio and --html asked for
    paired: list | None = None  # the paired comparison (comparison.compare), for --csv
    csv: dict = field(default_factory=dict)  # --csv's files besides the paired one: {suffix: (header, rows)}
    notes: str = ""  # the page's words above its rows
    figures: dict | None = None  # the page's last column: {clip: (caption, image file)}


def sampled(n_clips, max_clips, rng):
    """Which clips are judged: at most max_clips of n_clips, drawn by rng, in order."""
    return np.sort(rng.permutation(n_clips)[:max_clips])


def judge_clips(n_clips, clip, judge, keep):
    """Every system's metrics on every clip, and the kept clips' audio. clip(i) -> (what a kept clip
    shows besides the systems, the clip's own audio: {name: audio}, {system: audio});
    judge(shown, systems) -> {system: metrics}, each clip made once for both.
    # ({system: [metrics of each clip]}, {clip: {name: audio}})"""
    rows, kept = {}, {}
    for index in range(n_clips):
        shown, systems = clip(index)
        if index in keep:
            kept[index] = {**shown, **systems}
        for name, metrics in judge(shown, systems).items():
            rows.setdefault(name, []).append(metrics)
    return rows, kept


@torch.no_grad()
def outputs(model, codec, pairs, batch_size, corpora, known_notes=False):
    """The model's output for each pair (or triplet: the material is its corpus) of a dataset, and
    for a pointer head how its final stage chose grains: the share taken from each of its sources
    (the corpus counts as the target) and the share of chunks that carry on the previous chunk's
    grain. corpora: training.encode's. known_notes: triplets, the model given the scores' notes of
    input and material in place of stage 1's (Cascade's roll).
    # -> list of (N,) numpy, {"shares": (3,), "continued": float} or None"""
    result, counts, continued, joins = [], torch.zeros(3), 0, 0
    for start in range(0, len(pairs), batch_size):
        indices = range(start, min(start + batch_size, len(pairs)))
        batch = pairs.batch(indices)
        rolls = torch.stack([torch.from_numpy(pairs.material_roll(i)) for i in indices]) if known_notes else None
        x_in, x_tgt, corpus = training.encode(model, codec, batch, "cpu", corpora, rolls)
        out, stats = model(x_in, x_tgt, corpus, roll=batch.rolls if known_notes else None)
        result += list(codec.decode(out, batch.inputs.shape[1]).numpy())
        if "grains2" in stats:  # eval: (B, n_chunks, 1), numbered source * T + start, then the corpus's
            grains = stats["grains2"][..., 0]
            counts += F.one_hot((grains.flatten() // x_in.shape[2]).clamp(max=2), 3).sum(dim=0)
            continued += int((grains[:, 1:] == grains[:, :-1] + model.config.chunk_frames).sum())
            joins += grains[:, 1:].numel()
    if not counts.sum():
        return result, None
    return result, {"shares": (counts / counts.sum()).tolist(), "continued": continued / max(joins, 1)}


def judged(systems, x_in, x_tgt, sample_rate, grid_seconds):
    """Every metric of every system's audio against the pair ({name: (N,)} -> {name: metrics})."""
    sources = [quality.features(a, sample_rate) for a in (x_in, x_tgt)]
    return {name: {**verdict.blend_metrics(audio, x_in, x_tgt, sample_rate),
                   **quality.against_sources(quality.features(audio, sample_rate), *sources, grid_seconds)}
            for name, audio in systems.items()}


def grains_lines(grain_stats, sources=True):
    """How each model's final stage chose its grains ({name: outputs()'s grain stats or None})."""
    lines = []
    for name, stats in grain_stats.items():
        if stats is None:
            continue
        if sources:
            lines.append(f"{name}: the final stage's grains come from " + ", ".join(
                f"{share:.0%} {source}" for share, source in zip(stats["shares"], ("the input", "stage 1's output", "the target"))))
        lines.append(f"{name}: {stats['continued']:.0%} of the final stage's chunks carry on the previous chunk's grain")
    return "\n".join(lines)


def write_audio(folder, index, systems, sample_rate):
    """One pair's input, target and every system's output as DIR/pair<index>_<name>.wav (plot.py --compare)."""
    os.makedirs(folder, exist_ok=True)
    for name, audio in systems.items():
        checkpointing.write_wav(os.path.join(folder, f"pair{index}_{listening.slug(name)}.wav"), audio, sample_rate)


def load_checkpoint(path):
    """(state, model in eval mode) of a checkpoint, or SystemExit saying why not."""
    try:
        state = checkpointing.load(path)
        return state, checkpointing.model_from(state).eval()
    except checkpointing.CheckpointError as e:
        raise SystemExit(f"--ckpt: {e}") from None


def trained_on_scores(state):
    """Whether a checkpoint's run trained on rendered scores (checkpoints before them trained on audio)."""
    hp = state["hyperparameters"]
    return hp.get("dataset") == "scores" and not hp["data_dir"]


def held_out_triplets(state, soundfont=""):
    """The checkpoint's training and held-out triplets (scores.triplet_sets), rendered with its own
    SoundFont or another."""
    hp = {**state["hyperparameters"], **({"soundfont": soundfont} if soundfont else {})}
    return scores.triplet_sets(hyperparameters.section(scores.ScoresConfig, hp), log=lambda *_: None)


def refinement_off(model):
    """The model with stage 2's refinement at its initial zero: the fixed fit alone."""
    off = copy.deepcopy(model)
    for parameter in off.stage2.estimator.refine.parameters():
        nn.init.zeros_(parameter)
    return off


def learns_nothing(model, seed):
    """The model's nearest kin that learns nothing, (name, model): for a checkpoint whose stage 2
    plays toward an estimate, the choice rule before it (band levels and pitch classes, 4bf4f7f:
    fresh weights stand for random notes once stage 1 transcribes); else its config with fresh weights."""
    if model.config.estimate:
        return NEAREST, checkpointing.initial_model(replace(model.config, estimate=False), seed).eval()
    return UNTRAINED, checkpointing.initial_model(model.config, seed).eval()


def truth_systems(model, seed):
    """The models evaluate_truth runs, each as (model, given the scores' notes, the dict of material
    descriptions it shares: training.encode's): the checkpoint from audio alone and learns_nothing's;
    with estimate also the checkpoint given the true notes and with its refinement off. Models
    share descriptions where they would make the same ones: the same stage 1 fitting through the
    same notes, or no estimate at all (a pointer's description has no weights in it)."""
    shared = {}
    systems = {TRAINED: (model, False, shared)}
    if model.config.estimate:
        systems.update({TRUE_NOTES: (model, True, {}), REFINEMENT_OFF: (refinement_off(model), False, shared)})
    baseline, untrained = learns_nothing(model, seed)
    return {**systems, baseline: (untrained, False, {} if model.config.estimate else shared)}


def blocks_reset(model, seed):
    """The model with stage 1's blocks back at the run's initial weights (train.py seeds rank 0
    with the run's seed before building it), every other weight as trained."""
    reset = checkpointing.initial_model(model.config, seed).eval()
    blocks = {k: v for k, v in reset.state_dict().items() if k.startswith("stage1.blocks.")}
    reset.load_state_dict({**model.state_dict(), **blocks})
    return reset


def transcription_table(state, model, train, held_out):
    """Frame F1 of stage 1's transcription on the held-out pieces, from audio alone: for each
    held-out program, pooled over them, and pooled over a sample of the training programs (the
    transfer gap); beside it the same model with stage 1's blocks reset to the run's initial
    weights (what the blocks learned)."""
    config = model.config
    reset = blocks_reset(model, state["hyperparameters"]["seed"])
    codec = MDCTCodec(config.frame_dim)
    training_sample = train.programs[:: max(len(train.programs) // TRAINING_PROGRAMS_SHOWN, 1)][:TRAINING_PROGRAMS_SHOWN]
    systems = {"trained": model, "blocks reset": reset}
    counts = {name: {**notes.transcription_counts(m, codec, held_out.renderer, held_out.scores, held_out.programs, held_out.segment),
                     **notes.transcription_counts(m, codec, held_out.renderer, held_out.scores, training_sample, held_out.segment)}
              for name, m in systems.items()}
    rows = [(f"program {p} (held out)", [p]) for p in held_out.programs]
    rows += [("held-out programs, pooled", held_out.programs), (f"{len(training_sample)} training programs, pooled",
                                                               training_sample)]
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"stage 1's transcription of the {len(held_out.scores)} held-out pieces with "
             f"{os.path.basename(held_out.renderer.soundfont)}: frame F1 on 16 ms frames, 88 keys, threshold 0.5, "
             f"from audio alone (training programs shown: {training_sample})",
             f"{'':<{width}}" + "".join(f" {name:>13}" for name in systems)]
    lines.append("-" * len(lines[-1]))
    for label, programs in rows:
        lines.append(f"{label:<{width}}" + "".join(f" {notes.f1(sum(counts[name][p] for p in programs)):>13.3f}"
                                                   for name in systems))
    return "\n".join(lines)


@torch.no_grad()
def transcription_figures(folder, model, triplets, kept):
    """For each kept triplet, the score's piano roll of its input above stage 1's transcription,
    as folder/tripletN_notes.png: {triplet: (caption, file name)}."""
    os.makedirs(folder, exist_ok=True)
    codec, hop = MDCTCodec(model.config.frame_dim), model.config.frame_dim / model.config.sample_rate
    figures = {}
    for index, systems in sorted(kept.items()):
        x_in, x_tgt = (codec.encode(torch.from_numpy(systems[name])[None]) for name in ("input", "target"))
        probabilities = model.transcribe(x_in, x_tgt)[0].sigmoid().numpy()
        name = f"triplet{index}_notes.png"
        pianoroll.write_figure(os.path.join(folder, name), triplets.roll(index), probabilities, hop,
                               f"(program {triplets.draws[index][0]})")
        figures[index] = ("notes: score, transcription", name)
    return figures


def judge_truth(args, state, model, keep):
    """The ground-truth mode: stage 1's transcription of the held-out pieces (printed first), then
    every system against the ground truth of the checkpoint's held-out triplets (pieces and
    programs no training triplet used), rendered with its SoundFont or --soundfont."""
    hp = state["hyperparameters"]
    train, triplets = held_out_triplets(state, args.soundfont)
    if model.config.notes:
        print(transcription_table(state, model, train, triplets) + "\n")
    rng = np.random.default_rng(args.seed)
    sample = sampled(len(triplets), args.clips, rng)
    triplets.items, triplets.draws = [triplets.items[i] for i in sample], [triplets.draws[i] for i in sample]
    codec, rate = MDCTCodec(model.config.frame_dim), model.config.sample_rate
    made = {name: outputs(system, codec, triplets, hp["batch_size"], corpora, known)
            for name, (system, known, corpora) in truth_systems(model, args.seed).items()}

    def clip(index):
        x_in, x_tgt, material, length, truth = triplets[index]
        return {"input": x_in, "target": x_tgt, TRUTH: truth}, {
            **{name: out[index] for name, (out, _) in made.items()},
            ORACLE: groundtruth.oracle(model.stage1.pointer, truth, material, length, rate),
            "random grains": baselines.random_grains(x_in, x_tgt, model.config, rng, material, length),
            "Let it Bee": baselines.let_it_bee(x_in, material[:length], seed=args.seed + index),
            "copy of input": x_in, "copy of target": x_tgt}

    def judge(shown, systems):
        truth = shown[TRUTH]
        truth_features = quality.features(truth, rate)
        return {name: groundtruth.against_truth(audio, truth, truth_features, rate, model.config.frame_dim)
                for name, audio in systems.items()}

    rows, kept = judge_clips(len(triplets), clip, judge, keep)
    pieces = sorted({os.path.basename(triplets.paths[piece]) for piece, _ in triplets.items})
    print(f"{args.ckpt} (epoch {state['epoch']}) on {len(triplets)} held-out triplets: pieces {', '.join(pieces)} played "
          f"by programs {triplets.programs} of {os.path.basename(triplets.renderer.soundfont)}; no training triplet used "
          f"these pieces or programs")
    grains = {name: stats for name, (_, stats) in made.items()}
    if any(grains.values()):  # every grain is the material's: the shares say nothing here
        print(grains_lines(grains, sources=False))
    text, paired = truth_tables(rows, args.seed)
    per_triplet = [[name, index, *(f"{m[k]:.4f}" for k in groundtruth.METRICS)]
                   for name, measured in rows.items() for index, m in enumerate(measured)]
    return Report(rows, text, f"{os.path.basename(args.ckpt)}: {len(kept)} held-out triplets",
                  truth_page_rows(kept, rows, rate) if args.html else [], rate, kept, paired,
                  {"": (["row", "triplet", *groundtruth.METRICS], per_triplet)},
                  notes=("Here each row is a held-out triplet, and each system is judged against the ground truth "
                         "instead: log-spectral distance in dB (lsd, lower: closer), chroma and onset F (higher: closer), "
                         "MFCC Fréchet (lower: closer). The last column: the input's notes in the score, above stage 1's "
                         "transcription of it."),
                  figures=transcription_figures(args.html, model, triplets, kept) if args.html and model.config.notes
                  else None)


def truth_tables(rows, seed):
    """The ground-truth table (medians), how much of the gap to the oracle the trained model
    closes on log-spectral distance, and the paired comparison with every other row."""
    width = max(len(name) for name in rows) + 2
    lines = [f"{len(rows[TRAINED])} triplets against their ground truth, medians: log-spectral distance on a mel "
             f"spectrogram (dB), chroma cosine, onset F, MFCC Frechet distance",
             f"{'':<{width}}" + "".join(f" {k:>14}" for k in groundtruth.METRICS)]
    lines.append("-" * len(lines[-1]))
    lsd = {name: float(np.nanmedian([m["lsd"] for m in measured])) for name, measured in rows.items()}
    for name, measured in rows.items():
        lines.append(f"{name:<{width}}" + "".join(f" {np.nanmedian([m[k] for m in measured]):>14.3f}"
                                                 for k in groundtruth.METRICS))
    baseline = min((name for name in LEARNS_NOTHING if name in lsd), key=lambda name: lsd[name])
    gap = lsd[baseline] - lsd[ORACLE]

    def closes(name):
        closed = (lsd[baseline] - lsd[name]) / gap if gap > 0 else float("nan")
        return f"the {name}, {lsd[name]:.2f} dB, closes {closed:.0%} of it"

    lines += ["", f"gap to the oracle on lsd: {baseline} (the nearest of the systems that learn nothing) "
                  f"{lsd[baseline]:.2f} dB, oracle {lsd[ORACLE]:.2f} dB; "
                  + "; ".join(closes(name) for name in (TRAINED, TRUE_NOTES) if name in lsd)]
    paired = comparison.compare(rows, TRAINED, [name for name in rows if name != TRAINED], groundtruth.METRICS, seed)
    return "\n".join(lines) + "\n\n" + comparison.text(paired, TRAINED), paired


def truth_page_rows(kept, rows, rate):
    """The listening page's rows for triplets: input, target, ground truth, then every system."""
    names = ("input", "target", TRUTH, TRAINED, TRUE_NOTES, NEAREST, UNTRAINED, ORACLE, "Let it Bee")
    return [(f"triplet {index}", [(name, systems[name], rate, rows[name][index] if name in rows else None, None)
                                  for name in names if name in systems]) for index, systems in sorted(kept.items())]


def medians(rows):
    """{name: [metrics of each pair]} -> {name: (verdict shares, metric medians)}"""
    summary = {}
    for name, measured in rows.items():
        verdicts = [verdict.verdict(m) for m in measured]
        shares = {v: verdicts.count(v) / len(verdicts) for v in verdict.VERDICTS}
        summary[name] = shares, {k: float(np.nanmedian([m[k] for m in measured])) for k in (*TEXTURE, *QUALITY)}
    return summary


def tables(summary, n_pairs):
    width = max(32, *(len(name) + 1 for name in summary))
    header = f"{'':<{width}}" + "".join(f" {v:>9}" for v in verdict.VERDICTS) + "".join(f" {k:>11}" for k in TEXTURE)
    lines = [f"{n_pairs} pairs; verdict shares, then medians (texture metrics as range ratios to the sources; "
             f"distances in dB; spectrum_span: dist to the nearer source over the sources' own)", header, "-" * len(header)]
    for name, (shares, values) in summary.items():
        lines.append(f"{name:<{width}}" + "".join(f" {shares[v]:>9.0%}" for v in verdict.VERDICTS)
                     + "".join(f" {values[k]:>11.3f}" for k in TEXTURE))
    header = f"{'':<{width}}" + "".join(f" {k:>12}" for k in QUALITY)
    lines += ["", "quality, medians: content vs input (chroma cosine, onset F), timbre vs target (MFCC Frechet, "
              "spectrum dB), seams (extra onsets/s, share of onsets on the 128 ms grid; 25% by chance)",
              header, "-" * len(header)]
    for name, (_, values) in summary.items():
        lines.append(f"{name:<{width}}" + "".join(f" {values[k]:>12.3f}" for k in QUALITY))
    return "\n".join(lines)


def page_rows(kept, rows, rate):
    """The listening page's rows: each kept pair's input, target and the systems it compares."""
    page = []
    for index, systems in sorted(kept.items()):
        clips = [(name, systems[name], rate, rows[name][index] if name in rows else None,
                  verdict.verdict(rows[name][index]) if name in rows else None) for name in PAGE_CLIPS if name in systems]
        page.append((f"pair {index}", clips))
    return page


def pairs_csv(rows, summary):
    """--csv's files in the modes without a truth: the medians, and every metric and verdict of every
    system on every clip (NAME.pairs.csv)."""
    medians_rows = [[name, *(f"{shares[v]:.4f}" for v in verdict.VERDICTS), *(f"{values[k]:.4f}" for k in (*TEXTURE, *QUALITY))]
                    for name, (shares, values) in summary.items()]
    every = [[name, index, verdict.verdict(m), *(f"{m[k]:.4f}" for k in (*TEXTURE, *QUALITY))]
             for name, measured in rows.items() for index, m in enumerate(measured)]
    return {"": (["row", *verdict.VERDICTS, *TEXTURE, *QUALITY], medians_rows),
            ".pairs": (["row", "pair", "verdict", *TEXTURE, *QUALITY], every)}


def without_truth(rows, seed):
    """The tables of the modes without a truth: verdicts and quality medians, and with a trained
    model's row its paired comparison with the baselines present. # (text, paired, csv files)"""
    summary = medians(rows)
    text = tables(summary, len(next(iter(rows.values()))))
    paired = comparison.compare(rows, TRAINED, [name for name in COMPARED if name in rows], QUALITY, seed) \
        if TRAINED in rows else None
    if paired:
        text += "\n\n" + comparison.text(paired, TRAINED)
    return text, paired, pairs_csv(rows, summary)


def judge_pairs(args, state, model, keep):
    """The pairs mode: every system on the checkpoint's validation pairs (its validation files, or
    --data_dir's), against input and target."""
    hp = {**state["hyperparameters"], "dataset": "demo"}  # scores have their own evaluation: judge_truth
    if args.data_dir:
        hp["data_dir"] = args.data_dir
    rate, segment = model.config.sample_rate, checkpointing.segment_samples(state)
    tracks = data.run_tracks(hyperparameters.section(data.DataConfig, hp))
    _, val_tracks = data.split_by_file(tracks, hp["val_fraction"], hp["seed"])
    pairs = data.PairDataset(val_tracks, segment)
    if len(pairs) == 0:
        raise SystemExit("no validation pairs: the validation files are shorter than two segments")
    rng = np.random.default_rng(args.seed)
    pairs.pairs = [pairs.pairs[i] for i in sampled(len(pairs), args.clips, rng)]
    baseline, untrained = learns_nothing(model, args.seed)
    codec = MDCTCodec(model.config.frame_dim)
    trained_out, trained_grains = outputs(model, codec, pairs, hp["batch_size"], {})
    untrained_out, untrained_grains = outputs(untrained, codec, pairs, hp["batch_size"], {})
    grid_seconds = model.config.chunk_frames * model.config.frame_dim / rate

    def clip(index):
        x_in, x_tgt = (a.numpy() for a in pairs[index])
        other = tracks[(tracks.index(val_tracks[pairs.pairs[index][0]]) + 1 + int(rng.integers(len(tracks) - 1))) % len(tracks)]
        other_audio = other.read(int(rng.integers(other.n_samples - segment + 1)), segment)
        return {"input": x_in, "target": x_tgt}, {
            TRAINED: trained_out[index], baseline: untrained_out[index],
            "random grains": baselines.random_grains(x_in, x_tgt, model.config, rng),
            "Let it Bee": baselines.let_it_bee(x_in, x_tgt, seed=args.seed + index),
            **baselines.references(x_in, x_tgt, other_audio, rate, rng)}

    def judge(shown, systems):
        return judged(systems, shown["input"], shown["target"], rate, grid_seconds)

    rows, kept = judge_clips(len(pairs), clip, judge, keep)
    print(f"{args.ckpt} (epoch {state['epoch']}) on {len(pairs)} pairs of {len(val_tracks)} validation files of "
          f"{hp['data_dir'] or 'the demo music'}")
    if trained_grains:
        print(grains_lines({TRAINED: trained_grains, baseline: untrained_grains}))
    text, paired, csv_files = without_truth(rows, args.seed)
    return Report(rows, text, f"{os.path.basename(args.ckpt)}: {len(kept)} validation pairs",
                  page_rows(kept, rows, rate) if args.html else [], rate, kept, paired, csv_files)


def judge_file(args):
    """The one-file mode: an output file (and the references made of its input and target) against
    its input and its target (a folder's files one after another, looped to the output's length,
    as generate.py's transformers hear it)."""
    rate = args.sample_rate
    try:
        x_in, out = (data.read_audio(p, rate) for p in (args.input, args.output))
        x_tgt = np.concatenate([data.read_audio(p, rate) for p in target_files.audio_paths(args.target)])
    except ValueError as e:
        raise SystemExit(f"cannot use {e}") from None
    n = len(out)
    x_in, x_tgt = np.resize(x_in, n), np.resize(x_tgt, n)  # as generate.py loops the clips to the output's length
    rng = np.random.default_rng(args.seed)
    config = CascadeConfig()
    grid_seconds = config.chunk_frames * config.frame_dim / rate
    references = baselines.references(x_in, x_tgt, rng.standard_normal(n), rate, rng)
    del references["another file"]  # there is no other file here
    print(f"{args.output} against input {args.input} and target {args.target}, at {rate} Hz")
    rows, _ = judge_clips(1, lambda _: ({}, {"output": out, **references}),
                          lambda _, systems: judged(systems, x_in, x_tgt, rate, grid_seconds), keep=())
    text, paired, csv_files = without_truth(rows, args.seed)
    page = files_page(args.input, args.target, args.output, rows, x_tgt, references["50/50 mix"], rate) if args.html else []
    return Report(rows, text, f"{os.path.basename(args.output)} against its input and target", page, rate,
                  paired=paired, csv=csv_files)


def files_page(input_path, target_path, output_path, rows, x_tgt, mix, sample_rate):
    """The listening page's row for one output file: the input, output and a target file as
    they are (generate.py's full rate; a target folder as judged), and the 50/50 mix at the
    rate they were judged at."""
    def as_is(path):  # -> (audio, rate)
        return sf.read(path, dtype="float32")

    target = (x_tgt, sample_rate) if os.path.isdir(target_path) else as_is(target_path)
    output, mixed = rows["output"][0], rows["50/50 mix"][0]
    clips = [("input", *as_is(input_path), None, None), ("target", *target, None, None),
             ("output", *as_is(output_path), output, verdict.verdict(output)),
             ("50/50 mix", mix, sample_rate, mixed, verdict.verdict(mixed))]
    return [(os.path.basename(output_path), clips)]


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--ckpt", help="a checkpoint written by train.py: judge it on its held-out triplets (trained "
                                       "on scores) or its validation pairs")
    parser.add_argument("--soundfont", default="", help="with --ckpt trained on scores: render its held-out triplets "
                                                         "with this .sf2/.sf3 SoundFont instead of the run's own")
    parser.add_argument("--data_dir", default="", help="with --ckpt: judge it on pairs of this folder's files instead")
    parser.add_argument("--clips", type=int, default=64, help="with --ckpt: at most this many triplets or pairs")
    parser.add_argument("--audio", help="with --ckpt: write the --audio_clips' input, target and every system's "
                                        "output to this folder as WAV (then: python plot.py --compare FOLDER)")
    parser.add_argument("--audio_clips", default="0,1", help="with --audio: comma-separated clip numbers")
    parser.add_argument("--html", help="also write a listening page to this folder: index.html with every clip's "
                                       "player and spectrogram, the verdicts, metrics and tables (open it from disk)")
    parser.add_argument("--html_clips", type=int, default=8, help="with --html and --ckpt: the page's first N clips")
    parser.add_argument("--input", help="with --target and --output: judge one output file")
    parser.add_argument("--target", help="with --output: the target file, or the folder generate.py drew on")
    parser.add_argument("--output")
    parser.add_argument("--sample_rate", type=int, default=CascadeConfig.sample_rate,
                        help="with --output: the rate to judge at (the model's default)")
    parser.add_argument("--seed", type=int, default=0, help="the clip sample, noises, random grains and fresh weights")
    parser.add_argument("--csv", help="also write the rows' metrics to this CSV file, and beside it NAME.paired.csv "
                                      "(the paired comparison); without a truth also NAME.pairs.csv (every pair's metrics)")
    args = parser.parse_args(argv)
    if args.clips < 1:
        parser.error(f"--clips={args.clips} must be at least 1")
    try:
        audio_clips = {int(i) for i in args.audio_clips.split(",")}
    except ValueError:
        parser.error(f"--audio_clips={args.audio_clips!r} must be comma-separated clip numbers, e.g. 3,20")
    if args.html_clips < 1:
        parser.error(f"--html_clips={args.html_clips} must be at least 1")
    if args.ckpt:
        keep = (audio_clips if args.audio else set()) | (set(range(args.html_clips)) if args.html else set())
        state, model = load_checkpoint(args.ckpt)
        judge = judge_truth if trained_on_scores(state) and not args.data_dir else judge_pairs
        report = judge(args, state, model, keep)
    elif args.input and args.target and args.output:
        report = judge_file(args)
    else:
        parser.error("give --ckpt, or all three of --input, --target and --output")
    for index in audio_clips if args.audio else ():
        if index in report.kept:
            write_audio(args.audio, index, report.kept[index], report.rate)
    print(report.text)
    if args.html:
        page = listening.write_page(args.html, report.title, report.page, report.text, report.notes, report.figures)
        print(f"listening page: {page}")
    if args.csv:
        stem = args.csv.removesuffix(".csv")
        for suffix, (header, lines) in report.csv.items():
            with open(stem + suffix + ".csv", "w", newline="") as f:
                csv.writer(f).writerows([header, *lines])
        if report.paired:
            comparison.write_csv(report.paired, stem + ".paired.csv")


if __name__ == "__main__":
    main(sys.argv[1:])
