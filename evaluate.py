"""
How good is the output? Judge a checkpoint on its validation pairs against baselines
built from the same pairs: content against the input, timbre against the target, seams.

    python evaluate.py --ckpt checkpoints/epoch_10_step_270.pth
    python evaluate.py --ckpt ... --data_dir=~/music      # other music than the run's own validation files
    python evaluate.py --ckpt ... --csv=eval.csv          # also eval.csv, eval.paired.csv and eval.pairs.csv
    python evaluate.py --ckpt ... --audio=DIR --audio_pairs=3,20  # also those pairs' audio, every system's
    python evaluate.py --ckpt ... --html=DIR              # also a listening page: DIR/index.html, 8 pairs
    python evaluate.py --input a.wav --target b.wav --output out.wav   # e.g. what generate.py wrote

Every system and reference is made from the same pair, at the same level:
  systems     the trained model, the same config with fresh weights (the untrained
              pointer head: a nearest-neighbour mosaic), random grains with the head's
              chunking and crossfades, Let it Bee (Driedger et al. 2015)
  references  copies, the 50/50 mix, a delayed copy, noises, a segment of another file

Prints three tables: the verdicts (blend / copy / hiss / unrelated) with the texture
medians; the quality medians; and the paired comparison of the trained model with
each baseline (median difference per pair, bootstrap 95% interval, share of pairs
where the trained model is better).
"""

import argparse
import copy
import csv
import os
import sys
from dataclasses import replace

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
from model import Cascade, CascadeConfig, MDCTCodec

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


@torch.no_grad()
def outputs(model, codec, pairs, batch_size, corpora, known_notes=False):
    """The model's output for each pair (or triplet: the material is its corpus) of a dataset, and
    for a pointer head how its final stage chose grains: the share taken from each of its sources
    (the corpus counts as the target) and the share of chunks that carry on the previous chunk's
    grain. corpora: training.encode's. known_notes: triplets, the model given the scores' notes of
    input and material in place of stage 1's (Cascade's sounding).
    # -> list of (N,) numpy, {"shares": (3,), "continued": float} or None"""
    result, counts, continued, joins = [], torch.zeros(3), 0, 0
    for start in range(0, len(pairs), batch_size):
        indices = range(start, min(start + batch_size, len(pairs)))
        batch = pairs.batch(indices)
        rolls = torch.stack([torch.from_numpy(pairs.material_roll(i)) for i in indices]) if known_notes else None
        x_in, x_tgt, corpus = training.encode(model, codec, batch, "cpu", corpora, rolls)
        out, stats = model(x_in, x_tgt, corpus, sounding=batch.rolls if known_notes else None)
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


def page_rows(kept, rows, rate):
    """The listening page's rows: each kept pair's input, target and the systems it compares."""
    page = []
    for index, systems in sorted(kept.items()):
        clips = [(name, systems[name], rate, rows[name][index] if name in rows else None,
                  verdict.verdict(rows[name][index]) if name in rows else None) for name in PAGE_CLIPS if name in systems]
        page.append((f"pair {index}", clips))
    return page


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


def evaluate_checkpoint(path, state, model, data_dir, max_pairs, seed, keep=()):
    """The metrics of every system on the checkpoint's validation pairs ({name: [metrics of
    each pair]}), the model's rate, and the input, target and every system's audio of the
    pairs numbered in `keep` ({pair: {name: (N,)}})."""
    hp = {**state["hyperparameters"], "dataset": "demo"}  # scores have their own evaluation: evaluate_truth
    if data_dir:
        hp["data_dir"] = data_dir
    rate, segment = model.config.sample_rate, checkpointing.segment_samples(state)
    tracks = data.run_tracks(hyperparameters.section(data.DataConfig, hp))
    _, val_tracks = data.split_by_file(tracks, hp["val_fraction"], hp["seed"])
    pairs = data.PairDataset(val_tracks, segment)
    if len(pairs) == 0:
        raise SystemExit("no validation pairs: the validation files are shorter than two segments")
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.permutation(len(pairs))[:max_pairs])
    pairs.pairs = [pairs.pairs[i] for i in sample]
    baseline, untrained = learns_nothing(model, seed)
    codec = MDCTCodec(model.config.frame_dim)
    trained_out, trained_grains = outputs(model, codec, pairs, hp["batch_size"], {})
    untrained_out, untrained_grains = outputs(untrained, codec, pairs, hp["batch_size"], {})
    grid_seconds = model.config.chunk_frames * model.config.frame_dim / rate
    rows, kept = {}, {}
    for index in range(len(pairs)):
        x_in, x_tgt = (a.numpy() for a in pairs[index])
        track = pairs.pairs[index][0]
        other = tracks[(tracks.index(val_tracks[track]) + 1 + int(rng.integers(len(tracks) - 1))) % len(tracks)]
        other_audio = other.read(int(rng.integers(other.n_samples - segment + 1)), segment)
        systems = {TRAINED: trained_out[index], baseline: untrained_out[index],
                   "random grains": baselines.random_grains(x_in, x_tgt, model.config, rng),
                   "Let it Bee": baselines.let_it_bee(x_in, x_tgt, seed=seed + index),
                   **baselines.references(x_in, x_tgt, other_audio, rate, rng)}
        if index in keep:
            kept[index] = {"input": x_in, "target": x_tgt, **systems}
        for name, metrics in judged(systems, x_in, x_tgt, rate, grid_seconds).items():
            rows.setdefault(name, []).append(metrics)
    print(f"{path} (epoch {state['epoch']}) on {len(pairs)} pairs of {len(val_tracks)} validation files of "
          f"{hp['data_dir'] or 'the demo music'}")
    if trained_grains:
        print(grains_lines({TRAINED: trained_grains, baseline: untrained_grains}))
    return rows, rate, kept


def held_out_triplets(state, soundfont=""):
    """The checkpoint's training and held-out triplets (scores.triplet_sets), rendered with its own
    SoundFont or another."""
    hp = {**state["hyperparameters"], **({"soundfont": soundfont} if soundfont else {})}
    return scores.triplet_sets(hyperparameters.section(scores.ScoresConfig, hp), log=lambda *_: None)


def fresh(config, seed):
    """The model of a config with the weights a run seeded with `seed` starts from, in eval mode."""
    torch.manual_seed(seed)
    return Cascade(config).eval()


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
        return NEAREST, fresh(replace(model.config, estimate=False), seed)
    return UNTRAINED, fresh(model.config, seed)


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


def evaluate_truth(path, state, model, triplets, max_pairs, seed, keep=()):
    """Every system against the ground truth of the checkpoint's held-out triplets (pieces and
    programs no training triplet used): {name: [groundtruth metrics of each triplet]}, the
    model's rate, and the audio of the triplets numbered in `keep` ({triplet: {name: (N,)}})."""
    hp = state["hyperparameters"]
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.permutation(len(triplets))[:max_pairs])
    triplets.items, triplets.draws = [triplets.items[i] for i in sample], [triplets.draws[i] for i in sample]
    codec = MDCTCodec(model.config.frame_dim)
    rate = model.config.sample_rate
    made = {name: outputs(system, codec, triplets, hp["batch_size"], corpora, known)
            for name, (system, known, corpora) in truth_systems(model, seed).items()}
    rows, kept = {}, {}
    for index in range(len(triplets)):
        x_in, x_tgt, material, length, truth = triplets[index]
        systems = {**{name: out[index] for name, (out, _) in made.items()},
                   ORACLE: groundtruth.oracle(model.stage1.pointer, truth, material, length, rate),
                   "random grains": baselines.random_grains(x_in, x_tgt, model.config, rng, material, length),
                   "Let it Bee": baselines.let_it_bee(x_in, material[:length], seed=seed + index),
                   "copy of input": x_in, "copy of target": x_tgt}
        if index in keep:
            kept[index] = {"input": x_in, "target": x_tgt, TRUTH: truth, **systems}
        heard = quality.features(truth, rate)
        for name, audio in systems.items():
            rows.setdefault(name, []).append(groundtruth.against_truth(audio, truth, heard, rate, model.config.frame_dim))
    pieces = sorted({os.path.basename(triplets.paths[piece]) for piece, _ in triplets.items})
    print(f"{path} (epoch {state['epoch']}) on {len(triplets)} held-out triplets: pieces {', '.join(pieces)} played by "
          f"programs {triplets.programs} of {os.path.basename(triplets.renderer.soundfont)}; no training triplet used "
          f"these pieces or programs")
    grains = {name: stats for name, (_, stats) in made.items()}
    if any(grains.values()):  # every grain is the material's: the shares say nothing here
        print(grains_lines(grains, sources=False))
    return rows, rate, kept


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


def evaluate_files(input_path, target_path, output_path, sample_rate, seed):
    """The metrics of one output file (and of the references made of its input and target):
    {name: [metrics]}, and the target as judged (a folder's files one after another,
    looped to the output's length, as generate.py's transformers hear it)."""
    try:
        x_in, out = (data.read_audio(p, sample_rate) for p in (input_path, output_path))
        x_tgt = np.concatenate([data.read_audio(p, sample_rate) for p in target_files.audio_paths(target_path)])
    except ValueError as e:
        raise SystemExit(f"cannot use {e}") from None
    n = len(out)
    x_in, x_tgt = np.resize(x_in, n), np.resize(x_tgt, n)  # as generate.py loops the clips to the output's length
    rng = np.random.default_rng(seed)
    config = CascadeConfig()
    grid_seconds = config.chunk_frames * config.frame_dim / sample_rate
    references = baselines.references(x_in, x_tgt, rng.standard_normal(n), sample_rate, rng)
    del references["another file"]  # there is no other file here
    print(f"{output_path} against input {input_path} and target {target_path}, at {sample_rate} Hz")
    rows = {name: [metrics] for name, metrics in judged({"output": out, **references}, x_in, x_tgt, sample_rate,
                                                         grid_seconds).items()}
    return rows, x_tgt, references["50/50 mix"]


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


def write_summary_csv(summary, path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", *verdict.VERDICTS, *TEXTURE, *QUALITY])
        for name, (shares, values) in summary.items():
            writer.writerow([name, *(f"{shares[v]:.4f}" for v in verdict.VERDICTS), *(f"{values[k]:.4f}" for k in (*TEXTURE, *QUALITY))])


def blocks_reset(model, seed):
    """The model with stage 1's blocks back at the run's initial weights (train.py seeds rank 0
    with the run's seed before building it), every other weight as trained."""
    reset = fresh(model.config, seed)
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


def report_truth(args, state, model, keep, audio_pairs):
    """evaluate.py on a checkpoint trained on rendered scores: the ground-truth tables, stage 1's
    transcription, and the audio, listening page and CSV files asked for."""
    train, held_out = held_out_triplets(state, args.soundfont)
    if model.config.notes:
        print(transcription_table(state, model, train, held_out) + "\n")
    rows, rate, kept = evaluate_truth(args.ckpt, state, model, held_out, args.pairs, args.seed, keep)
    for index in audio_pairs if args.audio else ():
        if index in kept:
            write_audio(args.audio, index, kept[index], rate)
    text, paired = truth_tables(rows, args.seed)
    print(text)
    if args.html:
        title = f"{os.path.basename(args.ckpt)}: {len(kept)} held-out triplets"
        notes = ("Here each row is a held-out triplet, and each system is judged against the ground truth instead: "
                 "log-spectral distance in dB (lsd, lower: closer), chroma and onset F (higher: closer), MFCC Fréchet "
                 "(lower: closer). The last column: the input's notes in the score, above stage 1's transcription of it.")
        figures = transcription_figures(args.html, model, held_out, kept) if model.config.notes else None
        page = listening.write_page(args.html, title, truth_page_rows(kept, rows, rate), text, notes, figures)
        print(f"listening page: {page}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["row", "triplet", *groundtruth.METRICS])
            for name, measured in rows.items():
                writer.writerows([name, index, *(f"{m[k]:.4f}" for k in groundtruth.METRICS)]
                                 for index, m in enumerate(measured))
        comparison.write_csv(paired, args.csv.removesuffix(".csv") + ".paired.csv")


def write_pairs_csv(rows, path):
    """Every metric and the verdict of every system on every pair: what the tables summarise."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "pair", "verdict", *TEXTURE, *QUALITY])
        for name, measured in rows.items():
            for index, m in enumerate(measured):
                writer.writerow([name, index, verdict.verdict(m), *(f"{m[k]:.4f}" for k in (*TEXTURE, *QUALITY))])


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--ckpt", help="a checkpoint written by train.py: judge its validation pairs")
    parser.add_argument("--data_dir", default="", help="with --ckpt: validate on this folder's files instead")
    parser.add_argument("--soundfont", default="", help="with --ckpt trained on scores: render its held-out triplets "
                                                         "with this .sf2/.sf3 SoundFont instead of the run's own")
    parser.add_argument("--pairs", type=int, default=64, help="with --ckpt: at most this many validation pairs")
    parser.add_argument("--audio", help="with --ckpt: write the --audio_pairs' input, target and every system's "
                                        "output to this folder as WAV (then: python plot.py --compare FOLDER)")
    parser.add_argument("--audio_pairs", default="0,1", help="with --audio: comma-separated pair numbers")
    parser.add_argument("--html", help="also write a listening page to this folder: index.html with every clip's "
                                       "player and spectrogram, the verdicts, metrics and tables (open it from disk)")
    parser.add_argument("--html_pairs", type=int, default=8, help="with --html and --ckpt: the page's first N pairs")
    parser.add_argument("--input", help="with --target and --output: judge one output file")
    parser.add_argument("--target", help="with --output: the target file, or the folder generate.py drew on")
    parser.add_argument("--output")
    parser.add_argument("--sample_rate", type=int, default=CascadeConfig.sample_rate,
                        help="with --output: the rate to judge at (the model's default)")
    parser.add_argument("--seed", type=int, default=0, help="the pair sample, noises, random grains and fresh weights")
    parser.add_argument("--csv", help="also write the verdict and quality medians to this CSV file, and beside it "
                                      "NAME.paired.csv (the paired comparison) and NAME.pairs.csv (every pair's metrics)")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error(f"--pairs={args.pairs} must be at least 1")
    try:
        audio_pairs = {int(i) for i in args.audio_pairs.split(",")}
    except ValueError:
        parser.error(f"--audio_pairs={args.audio_pairs!r} must be comma-separated pair numbers, e.g. 3,20")
    if args.html_pairs < 1:
        parser.error(f"--html_pairs={args.html_pairs} must be at least 1")
    if args.ckpt:
        keep = (audio_pairs if args.audio else set()) | (set(range(args.html_pairs)) if args.html else set())
        state, model = load_checkpoint(args.ckpt)
        if trained_on_scores(state) and not args.data_dir:
            return report_truth(args, state, model, keep, audio_pairs)
        rows, rate, kept = evaluate_checkpoint(args.ckpt, state, model, args.data_dir, args.pairs, args.seed, keep)
        for index in audio_pairs if args.audio else ():
            if index in kept:
                write_audio(args.audio, index, kept[index], rate)
        page = page_rows(kept, rows, rate) if args.html else None
        title = f"{os.path.basename(args.ckpt)}: {len(kept)} validation pairs"
    elif args.input and args.target and args.output:
        rows, x_tgt, mix = evaluate_files(args.input, args.target, args.output, args.sample_rate, args.seed)
        page = files_page(args.input, args.target, args.output, rows, x_tgt, mix, args.sample_rate) if args.html else None
        title = f"{os.path.basename(args.output)} against its input and target"
    else:
        parser.error("give --ckpt, or all three of --input, --target and --output")
    n_pairs = len(next(iter(rows.values())))
    summary = medians(rows)
    text = tables(summary, n_pairs)
    paired = comparison.compare(rows, TRAINED, [name for name in COMPARED if name in rows], QUALITY, args.seed) \
        if TRAINED in rows else None
    if paired:
        text += "\n\n" + comparison.text(paired, TRAINED)
    print(text)
    if page:
        print(f"listening page: {listening.write_page(args.html, title, page, text)}")
    if args.csv:
        stem = args.csv.removesuffix(".csv")
        write_summary_csv(summary, args.csv)
        write_pairs_csv(rows, stem + ".pairs.csv")
        if paired:
            comparison.write_csv(paired, stem + ".paired.csv")


if __name__ == "__main__":
    main(sys.argv[1:])
