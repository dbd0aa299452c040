"""
The experiments behind the defaults, each one command.

    python experiments.py --variants              # the original design and its three remedies, ours, and
                                                  # ours without each of its choices: 10 epochs and an
                                                  # evaluation each (~40 min)
    python experiments.py --variants=original,ours --epochs=3
    python experiments.py --thresholds            # every reference's verdict metrics on many demo pairs
    python experiments.py --thresholds --music_dir=.cache/debian-music/metal/songs   # and on recorded music
    python experiments.py --seek_truth            # the head seeking the ground truth's fine levels: the
                                                  # ceiling of a prediction of them (docs/LOG.md)
    python experiments.py --truth_needed          # how near the truth's fine levels the head must seek to
                                                  # close half the gap, and linear predictions of them
    python experiments.py --learned_choice        # a learned description of grains, trained toward the
                                                  # grains nearest the truth for 1500 steps
    python experiments.py --learned_choice --train_programs=0,1,...   # the same with other training programs
    python experiments.py --tuning                # every melodic program's notes played by symusic's
                                                  # synthesizer and by ours: which are in tune (docs/LOG.md)
    python experiments.py --shared_samples=A.sf2,B.sf2   # which programs two SoundFonts play with the very
                                                  # same samples (sf_GMbank shares most of TimGM6mb's)
    python experiments.py --transcribe_more=checkpoints/epoch_6_step_534.pth --steps=250 --bell_db=3
                                                  # the checkpoint's transcription trained on: held-out
                                                  # and organ F1 after more steps, with other EQ
    python experiments.py --estimates=checkpoints/epoch_6_step_608.pth   # what stage 2's grains should be
                                                  # nearest: the fixed fit through stage 1's notes or the
                                                  # scores', the input's spectrum, Let it Bee's output
    python experiments.py --real_music            # fetch two genres of freely licensed recorded music from
                                                  # Debian; on each, evaluate the newest checkpoint, then
                                                  # train there and evaluate that checkpoint

Variants run train.py itself (a subprocess each, into experiments/<name>/) and read its
metrics.csv: the table shows what a user would see at the end of that run.
"""

import argparse
import csv
import glob
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import torch

from lib import (
    baselines,
    checkpointing,
    data,
    groundtruth,
    hyperparameters,
    notes,
    objective,
    scores,
    soundfont,
    training,
    verdict,
)
from model import Cascade, CascadeConfig, MDCTCodec, combined_rms

HERE = os.path.dirname(os.path.abspath(__file__))
# the original design's network and loss: a linear head after per-frame LayerNorms, dropout 0.1, trained on novelty alone
ORIGINAL = ["--head=linear", "--frame_norm=True", "--dropout=0.1", "--novelty_weight=0.85", "--follow_weight=0",
        "--sound_weight=0", "--copy_weight=0"]
# the two objective terms the levers below were measured with (docs/LOG.md: they went back to 0 after)
HARMONY_ONSETS = ["--harmony_weight=1", "--onsets_weight=1"]
VARIANTS = {
    "original": ORIGINAL,
    "original+A:recon_0.02": ORIGINAL + ["--recon_weight=0.02"],
    "original+B:final_residual_0.3": ORIGINAL + ["--final_residual=0.3"],
    "original+C:novelty_0.5": [a if not a.startswith("--novelty_weight") else "--novelty_weight=0.5" for a in ORIGINAL],
    "ours": [],
    "ours:linear_head": ["--head=linear"],
    "ours:frame_norm": ["--frame_norm=True"],
    "ours:no_sound": ["--sound_weight=0"],
    "ours:no_copy": ["--copy_weight=0"],
    "ours:min_shift_0": ["--min_shift_frames=0"],
    "ours:untrained": ["--lr=1e-12"],  # the pointer's nearest-neighbour prior alone
    "ours:dropout_0.1": ["--dropout=0.1"],
    # the levers of the choice and its training (docs/LOG.md)
    "ours:harmony_onsets": HARMONY_ONSETS,
    "ours:straight_through": HARMONY_ONSETS + ["--pointer_straight_through=True"],
    "ours:seek": HARMONY_ONSETS + ["--pointer_seek=True"],
    "ours:corpus_all": HARMONY_ONSETS + ["--pointer_corpus=all"],
    "ours:no_chroma": HARMONY_ONSETS + ["--pointer_chroma=0"],
    "ours:no_continuity": HARMONY_ONSETS + ["--pointer_continuity=0"],
}
EVALUATED = ("dist_in", "dist_tgt", "chroma_in", "onset_f_in", "mfcc_tgt")  # from evaluate.py: content, timbre
COLUMNS = ("grad_norm_max", "scale1", "scale2", "envelope", "corr_in", "corr_tgt", "blend_share", "copy_share", "hiss_share",
           "unrelated_share", *EVALUATED)
# Freely licensed recorded music in Debian's archive, one collection per genre: the packages and which
# of their OGG files are whole songs (Frets on Fire's song.ogg is the band without the lead guitar)
RECORDED_MUSIC = {
    "orchestral": {"hyperrogue-music": "usr/share/hyperrogue/music/*.ogg"},  # CC-BY-SA-3.0 game score
    "metal": {"fretsonfire-songs-muldjord": "usr/share/games/fretsonfire/data/songs/muldjord/*/song.ogg",  # CC-BY-SA-3.0
              "fretsonfire-songs-sectoid": "usr/share/games/fretsonfire/data/songs/sectoid/*/song.ogg"},  # MIT-style
}


def run_variant(name, overrides, epochs, root):
    """Train one variant with train.py; returns its last epoch row of metrics.csv and how many epochs warned."""
    out_dir = os.path.join(root, name)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)  # ours alone: a variant is rerun from scratch
    # the demo music, as the lab log's tables were measured: its evaluation is against input and target
    command = [sys.executable, os.path.join(HERE, "train.py"), "--dataset=demo", f"--out_dir={out_dir}", f"--epochs={epochs}",
               *overrides]
    t0 = time.time()
    result = subprocess.run(command, capture_output=True, text=True, cwd=HERE)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "train.log"), "w") as f:
        f.write(result.stdout + result.stderr)
    if result.returncode != 0:
        return None, f"exit {result.returncode}: {(result.stderr.strip().splitlines() or ['?'])[-1]}"
    with open(os.path.join(out_dir, "metrics.csv")) as f:
        epochs_rows = [r for r in csv.DictReader(f) if r["kind"] == "epoch"]
    judged = os.path.join(out_dir, "evaluate.csv")
    result = subprocess.run([sys.executable, os.path.join(HERE, "evaluate.py"), f"--ckpt={checkpointing.files(out_dir)[0]}",
                             f"--csv={judged}"], check=True, capture_output=True, text=True, cwd=HERE)
    with open(os.path.join(out_dir, "evaluate.txt"), "w") as f:
        f.write(result.stdout)
    with open(judged) as f:
        output = next(csv.DictReader(f))  # the model's row; the references follow
    row = {**epochs_rows[-1], **{k: output[k] for k in EVALUATED}}
    return row, f"{sum(1 for r in epochs_rows if r['warnings'])}/{len(epochs_rows)} epochs warned, {time.time() - t0:.0f} s"


def variants(names, epochs, root):
    header = f"{'variant':<27}" + "".join(f" {c.removesuffix('_share'):>9}" for c in COLUMNS) + "  last epoch's warnings"
    print(header + "\n" + "-" * len(header), flush=True)
    for name in names:
        row, note = run_variant(name, VARIANTS[name], epochs, root)
        if row is None:
            print(f"{name:<27} {note}", flush=True)
            continue
        cells = "".join(f" {float(row[c]):>9.3f}" for c in COLUMNS)
        print(f"{name:<27}{cells}  {row['warnings'] or 'none'} ({note})", flush=True)


def thresholds(music_dir, n_pairs, seed):
    """The verdict's metrics of every reference, and of the mosaics made from the pair with no
    training, over many pairs of every file (train and validation alike): the ranges
    verdict.py's thresholds are read from."""
    hp = {**hyperparameters.of_script(os.path.join(HERE, "train.py")), "data_dir": music_dir}
    config, source = hyperparameters.model_config(hp), hyperparameters.section(data.DataConfig, hp)
    rate, segment = config.sample_rate, data.seconds_to_samples(source.segment_seconds, config.sample_rate)
    tracks = data.run_tracks(source)
    pairs = data.PairDataset(tracks, segment)
    rng = np.random.default_rng(seed)
    rows = {}
    for index in rng.permutation(len(pairs))[:n_pairs]:
        x_in, x_tgt = (a.numpy() for a in pairs[int(index)])
        other = tracks[(pairs.pairs[index][0] + 1 + int(rng.integers(len(tracks) - 1))) % len(tracks)]
        other_audio = other.read(int(rng.integers(other.n_samples - segment + 1)), segment)
        made = {"random grains": baselines.random_grains(x_in, x_tgt, config, rng),
                "Let it Bee": baselines.let_it_bee(x_in, x_tgt, seed=int(index)),
                **baselines.references(x_in, x_tgt, other_audio, rate, rng)}
        for name, audio in made.items():
            rows.setdefault(name, []).append(verdict.measure(audio, x_in, x_tgt, rate))
    keys = ("max_corr", "envelope", "persistence", "motion", "fill")
    print(f"{len(next(iter(rows.values())))} pairs of {music_dir or 'the demo music'}: min-max of each metric, "
          f"median (10th-90th percentile) of spectrum_span, and the verdicts")
    print(f"{'':<32}" + "".join(f" {k:>13}" for k in (*keys, "structure")) + f" {'spectrum_span':>18}  verdicts")
    for name, measured in rows.items():
        values = np.array([[m[k] for k in keys] + [max(m["persistence"], m["motion"])] for m in measured])
        mid, lo, hi = np.percentile([m["spectrum_span"] for m in measured], [50, 10, 90])
        verdicts = [verdict.verdict(m) for m in measured]
        print(f"{name:<32}" + "".join(f" {lo:>6.2f}-{hi:<6.2f}" for lo, hi in zip(values.min(0), values.max(0)))
              + f" {mid:>6.2f} ({lo:.2f}-{hi:.2f})"
              + "  " + ", ".join(f"{verdicts.count(v)} {v}" for v in verdict.VERDICTS))
    print(f"thresholds: copy at max_corr >= {verdict.COPY_CORRELATION}; hiss at structure "
          f"(max of persistence, motion) < {verdict.LOOSE_STRUCTURE} or envelope < "
          f"{verdict.FLAT_ENVELOPE}; unrelated at spectrum_span > {verdict.UNRELATED_SPAN}")


def triplets_and_rate(train_programs=""):
    """The default run's (training, held-out) triplets and its sample rate; train_programs: other
    programs for the training triplets."""
    hp = {**hyperparameters.of_script(os.path.join(HERE, "train.py"))}
    hp["train_programs"] = train_programs or hp["train_programs"]
    return (*scores.triplet_sets(hyperparameters.section(scores.ScoresConfig, hp), log=lambda *_: None), hp["sample_rate"])


def fine_levels_of(model, triplet):
    """A triplet as the model sees it: input and target frames, the material's Corpus, and the fine
    levels of input, truth and material at the clip's unit level. # fine levels (1, T, fine_bands)"""
    x_in, x_tgt, material, length, truth = triplet
    head, codec = model.stage1.pointer, model.stage1.pointer.codec
    frames = [codec.encode(torch.from_numpy(a)[None]) for a in (x_in, x_tgt, truth, material[:length])]
    level = combined_rms(frames[0], frames[1], model.config.rms_floor)
    corpus = head.describe(torch.from_numpy(material)[None], torch.tensor([length]))
    return frames[:2], corpus, *(head.fine_levels(f / level) for f in (frames[0], frames[2], frames[3]))


def lsd_seeking(model, triplet, frames, corpus, wanted, rate):
    """The log-spectral distance to the truth of the model's output when both heads seek the fine
    levels `wanted` instead of their prediction's. # wanted (1, T, fine_bands)"""
    for stage in (model.stage1, model.stage2):
        stage.pointer.sought_fine = lambda x, f: wanted
    with torch.no_grad():
        out, _ = model(*frames, corpus)
    audio = model.stage1.pointer.codec.decode(out, len(triplet[0]))[0].numpy()
    return groundtruth.log_spectral_distance(audio, triplet[4], rate, model.config.frame_dim)


def seek_truth(fine_weights=(1.0, 4.0, 16.0, 100.0)):
    """The untrained head on the default run's held-out triplets, with pointer_fine at each weight,
    seeking the input's fine levels (what an untrained prediction seeks) or the ground truth's own
    (a perfect prediction): the median log-spectral distance to the truth, with the choice's
    other terms (chroma, continuity) at their defaults and off."""
    _, triplets, rate = triplets_and_rate()
    print(f"{len(triplets)} held-out triplets; median log-spectral distance to the truth (dB)")
    print(f"{'pointer_fine':>12} {'other terms':>12} {'seeks input':>12} {'seeks truth':>12}")
    for weight in fine_weights:
        for others in ({}, {"pointer_chroma": 0.0, "pointer_continuity": 0.0}):
            model = Cascade(CascadeConfig(pointer_fine=weight, **others)).eval()
            distances = {"input": [], "truth": []}
            for triplet in triplets:
                frames, corpus, fine_in, fine_truth, _ = fine_levels_of(model, triplet)
                for seeks, wanted in (("input", fine_in), ("truth", fine_truth)):
                    distances[seeks].append(lsd_seeking(model, triplet, frames, corpus, wanted, rate))
            print(f"{weight:>12g} {'off' if others else 'defaults':>12} {np.median(distances['input']):>12.2f} "
                  f"{np.median(distances['truth']):>12.2f}", flush=True)


def chunk_means(levels, R):
    """Each chunk's mean over its R frames. # (1, T, bands) -> (n_chunks, bands)"""
    return torch.stack([chunk.mean(dim=0) for chunk in levels[0].split(R)])


def chunk_design(fine_in, fine_material, R):
    """What a linear prediction of a chunk's move toward the truth may use: the input's chunk
    means and the material's mean minus the input's (the two instruments' average difference). # (n_chunks, 2*bands+1)"""
    means = chunk_means(fine_in, R)
    offset = (fine_material.mean(dim=1) - fine_in.mean(dim=1)).expand(len(means), -1)
    return torch.cat([means, offset, torch.ones(len(means), 1)], dim=1).double()


def fitted_move(model, triplets, R, ridge=1.0):
    """Least squares (ridge) from chunk_design to the truth's chunk means minus the input's, over triplets."""
    rows, moves = [], []
    for triplet in triplets:
        _, _, fine_in, fine_truth, fine_material = fine_levels_of(model, triplet)
        rows.append(chunk_design(fine_in, fine_material, R))
        moves.append((chunk_means(fine_truth, R) - chunk_means(fine_in, R)).double())
    X, Y = torch.cat(rows), torch.cat(moves)
    return torch.linalg.solve(X.T @ X + ridge * torch.eye(X.shape[1], dtype=X.dtype), X.T @ Y)


def truth_needed(epochs=4, fractions=(0.25, 0.5, 0.75, 0.9)):
    """How much of the ground truth's fine levels the heads must know to close half the gap: the
    untrained head at the setting where seeking the truth goes furthest (pointer_fine 16, chroma
    and continuity off) seeking fine levels between the input's and the truth's, and predictions of
    them a model could make, linear in each chunk's input levels and the instruments' average
    difference, fitted on `epochs` draws of the training triplets, or on the held-out ones
    themselves (the best any such map could do)."""
    train, held_out, rate = triplets_and_rate()
    model = Cascade(CascadeConfig(pointer_fine=16.0, pointer_chroma=0.0, pointer_continuity=0.0)).eval()
    R = model.config.chunk_frames
    training = []
    for epoch in range(epochs):
        train.set_epoch(epoch)
        training += [train[i] for i in range(len(train))]
    maps = {"training": fitted_move(model, training, R), "held-out": fitted_move(model, held_out, R)}

    def frame_by_frame(chunks, T):  # (n_chunks, bands) -> (1, T, bands)
        return chunks.repeat_interleave(R, dim=0)[None, :T]

    def predicted(fine_in, fine_material, which):
        move = (chunk_design(fine_in, fine_material, R) @ maps[which]).float()
        return fine_in + frame_by_frame(move, fine_in.shape[1])

    # what both heads seek, from the fine levels of input i, truth t and material m
    rows = {"the input's (what an untrained prediction seeks)": lambda i, t, m: i,
            "the input's + the material's mean - the input's": lambda i, t, m: i + m.mean(1, True) - i.mean(1, True),
            "a linear prediction fitted on training triplets": lambda i, t, m: predicted(i, m, "training"),
            "a linear prediction fitted on these triplets": lambda i, t, m: predicted(i, m, "held-out"),
            "the truth's mean over each chunk": lambda i, t, m: frame_by_frame(chunk_means(t, R), t.shape[1])}
    for f in fractions:
        rows[f"the input's, {f:.0%} of the way to the truth's"] = lambda i, t, m, f=f: i + f * (t - i)
    rows["the truth's own"] = lambda i, t, m: t
    distances, errors = {name: [] for name in rows}, {name: [] for name in rows}
    for triplet in held_out:
        frames, corpus, fine_in, fine_truth, fine_material = fine_levels_of(model, triplet)
        for name, wanted in rows.items():
            sought = wanted(fine_in, fine_truth, fine_material)
            errors[name].append(float((sought - fine_truth).pow(2).mean()))
            distances[name].append(lsd_seeking(model, triplet, frames, corpus, sought, rate))
    print(f"{len(held_out)} held-out triplets, the untrained head with pointer_fine 16 and chroma and continuity off")
    print(f"{'the fine levels both heads seek':<52} {'error (10 dB)^2':>15} {'median LSD (dB)':>15}")
    for name in rows:
        print(f"{name:<52} {np.mean(errors[name]):>15.2f} {np.median(distances[name]):>15.2f}", flush=True)


def semitone_filter(sample_rate, n_fft, lowest=28, highest=100):
    """Triangular weights of every FFT bin on each semitone from MIDI note `lowest` to `highest`:
    a grain's spectrum with its octaves kept, which chroma folds together. # (semitones, n_fft//2 + 1)"""
    pitch = 69 + 12 * np.log2(np.maximum(np.fft.rfftfreq(n_fft, 1 / sample_rate), 1e-3) / 440)
    weights = [np.maximum(0, 1 - np.abs(pitch - note)) for note in range(lowest, highest + 1)]
    return torch.from_numpy(np.stack(weights)).float()


class GrainEncoder(torch.nn.Module):
    """A grain's semitone levels, loudness removed, as a unit vector: a learned description of what it plays."""

    def __init__(self, n_semitones, width=128, n_out=32):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(n_semitones, width), torch.nn.GELU(),
                                       torch.nn.Linear(width, width), torch.nn.GELU(), torch.nn.Linear(width, n_out))

    def forward(self, levels):  # (..., n_semitones) -> (..., n_out)
        return torch.nn.functional.normalize(self.net(levels - levels.mean(dim=-1, keepdim=True)), dim=-1)

    def distance(self, queries, keys):
        """1 - cosine of every query's description with every key's, times 10: weighed as a 10 dB miss,
        as the head weighs chroma. # (n, n_semitones), (P, n_semitones) -> (n, P)"""
        return 10 * (1 - self(queries) @ self(keys).T)


def grains_of(audio, R, D):
    """Grain t of audio: its samples [tD, tD + RD), silence after its end. # (N,) numpy -> (N//D + 1, R*D)"""
    return torch.nn.functional.pad(torch.from_numpy(audio).float(), (0, R * D)).unfold(0, R * D, D)


def chunks_of(levels, starts, R):
    """The R frames of levels from each start, flattened: a chunk's or grain's description. # (T, C) -> (n, R*C)"""
    return levels.unfold(0, R, 1)[starts].reshape(len(starts), -1)


def choice_terms(head, semitones, triplet, rate):
    """One triplet's choice for a single head (as the oracle plays): the untrained head's fixed
    distance of every material grain to each input chunk (band levels and chroma, no continuity),
    the semitone levels of the input's chunks and the material's grains, and the oracle's
    distance of every grain to the truth's chunks (mean squared mel dB)."""
    x_in, x_tgt, material, length, truth = triplet
    D, R = head.codec.D, head.chunk_frames
    frames = [head.codec.encode(torch.from_numpy(a)[None]) for a in (x_in, x_tgt)]
    level = combined_rms(*frames, CascadeConfig.rms_floor)
    T = frames[0].shape[2]
    own = (torch.arange(-(-T // R)) * R).clamp(max=T - 1)  # each chunk's first frame
    corpus = head.describe(torch.from_numpy(material)[None], torch.tensor([length])).at_unit_level(1 / level.view(-1), R)
    grains = torch.arange(corpus.allowed.shape[1])
    queries = chunks_of(head.describe_frames(torch.nn.functional.pad(frames[0] / level, (0, R - 1)))[0], own, R)
    fixed = torch.cdist(queries, chunks_of(corpus.levels[0], grains, R)).pow(2) / queries.shape[1]
    fixed = fixed + head.chroma_weight * 10 * (1 - head.grains_chroma(grains_of(x_in, R, D)[own]) @ corpus.chroma[0].T)
    oracle = groundtruth.oracle_distances(head, truth, material, rate) / (R * groundtruth.N_MELS)  # mean squared dB

    def semitone_levels(grains):  # at the clip's unit level, as the band levels
        power = torch.fft.rfft(grains * torch.hann_window(R * D), dim=-1).abs().pow(2)
        return torch.log10(power @ semitones.T / level.view(()) ** 2 + 1e-6)

    return dict(fixed=fixed, oracle=oracle, allowed=corpus.allowed[0], queries=semitone_levels(grains_of(x_in, R, D)[own]),
                keys=semitone_levels(grains_of(material, R, D)[grains]), frames=frames[0], corpus=corpus, truth=truth)


@torch.no_grad()
def lsd_of_choice(head, terms, encoder, weight, rate):
    """Median log-spectral distance to the truth when every chunk plays the grain of least fixed +
    weight * learned distance. # terms: choice_terms of each triplet"""
    distances = []
    for t in terms:
        distance = t["fixed"] + weight * encoder.distance(t["queries"], t["keys"]) if weight else t["fixed"]
        best = distance.masked_fill(~t["allowed"][None], float("inf")).argmin(dim=1)
        S, T, n_chunks = head.n_sources, t["frames"].shape[2], len(best)
        played = head.player(torch.ones(1, n_chunks, 1), (S * T + best).view(1, n_chunks, 1), [t["frames"]] * S,
                                  t["corpus"])
        audio = head.codec.decode(played, len(t["truth"]))[0].numpy()
        distances.append(groundtruth.log_spectral_distance(audio, t["truth"], rate, head.codec.D))
    return float(np.median(distances))


def learned_choice(train_programs="", steps=1500, epochs=4, batch_size=8, temperature=10.0, report_every=250):
    """Issue 31's first two levers in their strongest form, outside the cascade: a learned
    description of grains (GrainEncoder, one for input chunks and material grains alike) added to
    the untrained head's fixed distance with a learned weight, trained by cross-entropy of the
    choice toward the grains nearest the truth (soft labels from the oracle's mel distance, at
    `temperature` mean squared dB per nat), for far more steps than a default run takes. Judged
    by the log-spectral distance of a single head's choice on held-out pieces, played by the
    held-out programs and by the training programs (train.py's, or train_programs)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train, held_out, rate = triplets_and_rate(train_programs)
    head = Cascade(CascadeConfig()).stage1.pointer.eval()
    semitones = semitone_filter(rate, head.chunk_frames * head.codec.D)
    known_programs = scores.TripletDataset(train.renderer, list(zip(held_out.paths, held_out.scores)), train.programs,
                                           train.segment, train.material, train.hop, train.seed, fixed=True)
    judged = {"held-out programs": [choice_terms(head, semitones, t, rate) for t in held_out],
              "training programs": [choice_terms(head, semitones, t, rate) for t in known_programs]}
    training = []
    for epoch in range(epochs):
        train.set_epoch(epoch)
        training += [choice_terms(head, semitones, train[i], rate) for i in range(len(train))]
    encoder, log_weight = GrainEncoder(len(semitones)), torch.zeros((), requires_grad=True)
    optimizer = torch.optim.Adam([*encoder.parameters(), log_weight], lr=1e-3)

    def report(step, loss, weight):
        judged_lsd = " ".join(f"{lsd_of_choice(head, terms, encoder, weight, rate):>18.2f}" for terms in judged.values())
        print(f"{step:>6} {loss:>14} {weight:>7.2f} {judged_lsd}", flush=True)

    print(f"{len(training)} training triplets; median LSD (dB) on held-out pieces played by")
    print(f"{'step':>6} {'cross-entropy':>14} {'weight':>7} " + " ".join(f"{name:>18}" for name in judged))
    report("fixed", "", 0.0)
    for step in range(1, steps + 1):
        loss = 0.0
        for index in rng.integers(len(training), size=batch_size):
            t = training[index]
            wanted = (-t["oracle"] / temperature).masked_fill(~t["allowed"][None], float("-inf")).softmax(dim=1)
            distance = t["fixed"] + log_weight.exp() * encoder.distance(t["queries"], t["keys"])
            chosen = (-head.sharpness * distance).masked_fill(~t["allowed"][None], float("-inf")).log_softmax(dim=1)
            loss = loss - (wanted * chosen.masked_fill(~t["allowed"][None], 0)).sum(dim=1).mean() / batch_size
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % report_every == 0:
            report(step, f"{loss.item():.2f}", log_weight.exp().item())


def fetch_debian_music(folder, packages):
    """Download packages ({name: glob of its songs}) with apt-get (no root needed) and unpack
    their songs into folder/songs; a folder already filled is reused."""
    songs = os.path.join(folder, "songs")
    if os.path.isdir(songs) and os.listdir(songs):
        return songs
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise SystemExit("--real_music needs apt-get and dpkg-deb (a Debian or Ubuntu machine); or pass --music_dir "
                         "with a folder of recorded music")
    debs = os.path.join(folder, "debs")
    os.makedirs(debs, exist_ok=True)
    for package in packages:
        result = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"apt-get download {package} failed: {result.stderr.strip()[-500:]}; "
                             f"run 'apt-get update' first, or pass --music_dir")
    unpacked = os.path.join(folder, "unpacked")
    for deb in glob.glob(os.path.join(debs, "*.deb")):
        subprocess.run(["dpkg-deb", "-x", deb, unpacked], check=True)
    os.makedirs(songs + ".tmp", exist_ok=True)
    for package, pattern in packages.items():
        for path in sorted(glob.glob(os.path.join(unpacked, pattern))):
            song = os.path.dirname(path) if os.path.basename(path) == "song.ogg" else path.removesuffix(".ogg")
            shutil.copy(path, os.path.join(songs + ".tmp", f"{package}_{os.path.basename(song).replace(' ', '_')}.ogg"))
    os.replace(songs + ".tmp", songs)
    shutil.rmtree(unpacked)
    return songs


def real_music(music_dir, ckpt, epochs, root):
    """On each collection of recorded music: the evaluation of ckpt (trained elsewhere), then of a
    checkpoint trained on that collection."""
    collections = {os.path.basename(os.path.normpath(music_dir)): music_dir} if music_dir else {
        genre: fetch_debian_music(os.path.join(".cache", "debian-music", genre), packages)
        for genre, packages in RECORDED_MUSIC.items()}
    evaluate = [sys.executable, os.path.join(HERE, "evaluate.py")]
    for genre, songs in collections.items():
        print(f"\n=== {genre}: {len(os.listdir(songs))} files in {songs}", flush=True)
        if ckpt:
            print(f"\n== {ckpt}, trained elsewhere, judged on {genre}", flush=True)
            subprocess.run([*evaluate, f"--ckpt={ckpt}", f"--data_dir={songs}"], check=True)
        name = f"recorded:{genre}"
        print(f"\n== trained on {genre} for {epochs} epochs, judged on its own validation files", flush=True)
        row, note = run_variant(name, [f"--data_dir={songs}"], epochs, root)
        if row is None:
            raise SystemExit(f"training on {songs} failed ({note}); see {os.path.join(root, name, 'train.log')}")
        with open(os.path.join(root, name, "evaluate.txt")) as f:
            print(f.read() + f"its last health report: warnings {row['warnings'] or 'none'} ({note})", flush=True)


def strongest_partial_cents(audio, key, rate):
    """How far, in cents, a note's strongest partial lies from the nearest whole multiple (1 and up)
    of the written key's frequency: near 0 where the note sounds as written."""
    power = np.abs(np.fft.rfft(audio * np.hanning(len(audio)), 8 * rate)) ** 2
    multiple = (np.argmax(power) / 8) / (440 * 2 ** ((key - 69) / 12))
    return 1200 * abs(np.log2(multiple / max(round(multiple), 1))) if multiple > 0 else np.inf  # silence: no pitch


def tuning(soundfonts, keys=(48, 60, 72), rate=16000):
    """For each SoundFont: how many of the melodic programs play every key in `keys` in tune (the
    strongest partial within 30 cents of a harmonic) with symusic's synthesizer and with ours
    (lib/soundfont.py), and which programs symusic plays out of tune."""
    import symusic

    for path in soundfonts:
        theirs, ours = symusic.Synthesizer(path, sample_rate=rate), soundfont.Synthesizer(path, scores.MELODIC_PROGRAMS, rate)
        out_of_tune = {"symusic": [], "ours": []}
        for program in scores.MELODIC_PROGRAMS:
            for name, play in (("symusic", lambda s: np.asarray(theirs.render(s, stereo=False)).reshape(-1)),
                               ("ours", lambda s: ours.play(s, program))):
                for key in keys:  # symusic plays the track's program
                    audio = np.nan_to_num(play(soundfont.one_note(key, 1.5, program))[rate // 10 : rate // 10 + rate]
                                          .astype(np.float64))
                    if strongest_partial_cents(audio, key, rate) > 30:
                        out_of_tune[name].append(program)
                        break
        n = len(scores.MELODIC_PROGRAMS)
        print(f"{os.path.basename(path)}: programs playing keys {list(keys)} in tune: symusic {n - len(out_of_tune['symusic'])}"
              f"/{n}, ours {n - len(out_of_tune['ours'])}/{n}; out of tune with symusic: {out_of_tune['symusic']}; "
              f"with ours: {out_of_tune['ours']}")


def shared_samples(first, second, key=60, rate=16000):
    """Which melodic programs two SoundFonts play with the same waveform (correlation >= 0.98 over
    one second of a note): a SoundFont 'never heard' is only as new as the samples it does not share."""
    synths = [soundfont.Synthesizer(path, scores.MELODIC_PROGRAMS, rate) for path in (first, second)]
    score, same = soundfont.one_note(key, 1.0), []
    for program in scores.MELODIC_PROGRAMS:
        a, b = (synth.play(score, program, rate).astype(np.float64) for synth in synths)
        if np.dot(a, b) >= 0.98 * np.sqrt(np.dot(a, a) * np.dot(b, b)):
            same.append(program)
    print(f"{os.path.basename(first)} and {os.path.basename(second)} play key {key} with the same samples on "
          f"{len(same)} of {len(scores.MELODIC_PROGRAMS)} melodic programs: {same}")


ORGANS = [16, 17, 18]  # TimGM6mb's training organs: like the held-out 19, they sound a 16-foot stop an octave low


def transcribe_more(path, steps, tilt_db, bell_db, lr=1e-3, batch=16):
    """A checkpoint's stage 1 trained on for `steps` more transcription steps (train.py's excerpts,
    with this EQ; lr decaying along a half cosine), then its frame F1 on the held-out pieces for
    the held-out programs and the training organs: does more of the same teach the organs' octave?"""
    state = checkpointing.load(path)
    model, hp = checkpointing.model_from(state), state["hyperparameters"]
    train, held_out = scores.triplet_sets(hyperparameters.section(scores.ScoresConfig, hp), log=lambda *_: None)
    augment = notes.Augment(gain_db=hp["augment_gain_db"], tilt_db=tilt_db, bell_db=bell_db)
    clips = notes.NoteClips(train.renderer, train.scores, train.programs, train.segment, hp["frame_dim"], augment)
    codec = MDCTCodec(hp["frame_dim"])
    optimizer = torch.optim.AdamW([p for n, p in model.named_parameters() if n.startswith("stage1.")], lr=lr,
                                  weight_decay=hp["weight_decay"])
    model.train()
    for i in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * i / steps))
        x_in, x_tgt, rolls = clips.batch(batch, np.random.default_rng([hp["seed"], 99, i]))
        loss = objective.notes_loss(model.transcribe(codec.encode(x_in), codec.encode(x_tgt)), rolls)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        optimizer.step()
    model.eval()
    counts = notes.transcription_counts(model, codec, held_out.renderer, held_out.scores, held_out.programs + ORGANS,
                                        held_out.segment)
    pooled = notes.f1(sum(counts[p] for p in held_out.programs))
    print(f"{path} + {steps} steps (tilt {tilt_db} dB, bells {bell_db} dB): held-out pooled F1 {pooled:.3f}; "
          + ", ".join(f"{p}: {notes.f1(c):.3f}" for p, c in counts.items()))


@torch.no_grad()
def estimates(path, n_triplets, soundfont=""):
    """Ways to choose stage 2's grains, each by the grain nearest a wanted mel spectrum, on held-out
    triplets of a checkpoint trained on scores: the fixed fit (NoteSpectra) through stage 1's notes
    or the scores' (of input, material or both), the input's own spectrum, Let it Bee's output;
    beside them the nearest-neighbour head and Let it Bee. LSD to the truth, by the input's program
    too: where do transcription errors cost, and does the estimate beat Let it Bee when notes are right?"""
    state = checkpointing.load(path)
    model_config = {**checkpointing.model_config(state), "estimate": True}
    model = Cascade(CascadeConfig(**model_config)).eval()
    model.load_state_dict(state["model"], strict=False)  # a checkpoint before estimate: its stage 1, a fresh fit
    nearest = Cascade(CascadeConfig(**{**model_config, "estimate": False})).eval()
    hp = {**state["hyperparameters"], **({"soundfont": soundfont} if soundfont else {})}
    _, held = scores.triplet_sets(hyperparameters.section(scores.ScoresConfig, hp), log=lambda *_: None)
    sample = np.sort(np.random.default_rng(0).permutation(len(held))[:n_triplets])
    held.items, held.draws = [held.items[i] for i in sample], [held.draws[i] for i in sample]
    codec, spectra, head = MDCTCodec(model.config.frame_dim), model.note_spectra, model.stage2.estimator
    rows = {}
    for i in range(len(held)):
        batch = held.batch([i])
        x_in, _, material, length, truth = held[i]
        x, y = codec.encode(batch.inputs), codec.encode(batch.targets)
        heard = model.describe(batch.materials, batch.material_lengths).at_unit_level(torch.ones(1), head.chunk_frames)
        known = model.describe(batch.materials, batch.material_lengths, batch.material_rolls).at_unit_level(
            torch.ones(1), head.chunk_frames)
        transcribed = model.transcribe(x, y) > 0
        bee = baselines.let_it_bee(x_in, material[:length], seed=i)

        def mel_of(audio):  # at the material's unit level, as the corpus is described
            return spectra.mel_db(spectra.power(torch.as_tensor(audio).float().view(1, -1) / heard.mel_level[:, None]))

        def nearest_to(wanted, corpus):
            grains = 3 * x.shape[2] + head.nearest(wanted, corpus)[..., None]
            return codec.decode(head.player(torch.ones(grains.shape), grains, [x] * 3, corpus), len(truth))[0].numpy()

        systems = {
            "fit, stage 1's notes": nearest_to(spectra.estimate(heard.spectra, transcribed), heard),
            "fit, the scores' notes": nearest_to(spectra.estimate(known.spectra, batch.rolls), known),
            "fit, the scores' notes of the material": nearest_to(spectra.estimate(known.spectra, transcribed), known),
            "fit, the scores' notes of the input": nearest_to(spectra.estimate(heard.spectra, batch.rolls), heard),
            "the input's own spectrum": nearest_to(mel_of(x_in), heard),
            "Let it Bee's output": nearest_to(mel_of(bee), heard),
            "nearest-neighbour head": codec.decode(nearest(x, y, training.encode(nearest, codec, batch, "cpu", {})[2])[0],
                                                   len(truth))[0].numpy(),
            "Let it Bee": bee,
        }
        for name, audio in systems.items():
            rows.setdefault(name, []).append(groundtruth.log_spectral_distance(audio, truth, held.renderer.sample_rate,
                                                                                 model.config.frame_dim))
    bee = np.array(rows["Let it Bee"])
    inputs = np.array([a for a, _, _ in held.draws])
    width = max(len(name) for name in rows) + 2
    print(f"{path}: {len(held)} held-out triplets of {os.path.basename(held.renderer.soundfont)}; each chunk plays the "
          f"material's grain nearest the row's wanted spectrum; log-spectral distance to the truth (dB), medians\n"
          f"{'':<{width}} {'all':>6} {'- LiB':>6} {'better':>7}" + "".join(f" {f'in {p}':>6}" for p in held.programs))
    for name, measured in rows.items():
        measured = np.array(measured)
        print(f"{name:<{width}} {np.median(measured):>6.2f} {np.median(measured - bee):>+6.2f} {np.mean(measured < bee):>7.0%}"
              + "".join(f" {np.median(measured[inputs == p]):>6.2f}" for p in held.programs))


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--variants", nargs="?", const=",".join(VARIANTS),
                        help=f"train and compare variants (comma-separated; all by default): {', '.join(VARIANTS)}")
    parser.add_argument("--thresholds", action="store_true", help="print every reference's verdict metrics")
    parser.add_argument("--real_music", action="store_true", help="judge and train on recorded music")
    parser.add_argument("--transcribe_more", default="", help="a checkpoint trained on scores: train its "
                        "transcription on, then print held-out and organ F1")
    parser.add_argument("--steps", type=int, default=250, help="--transcribe_more: steps")
    parser.add_argument("--estimates", default="", help="a checkpoint trained on scores: which wanted spectrum stage "
                        "2's grains should be nearest, on its held-out triplets (LSD to the truth)")
    parser.add_argument("--triplets", type=int, default=30, help="--estimates: held-out triplets")
    parser.add_argument("--soundfont", default="", help="--estimates: render the triplets with this SoundFont instead")
    parser.add_argument("--tilt_db", type=float, default=3.0, help="--transcribe_more: the EQ's tilt (train.py's: 3)")
    parser.add_argument("--bell_db", type=float, default=9.0, help="--transcribe_more: the EQ's bells (train.py's: 9)")
    parser.add_argument("--shared_samples", default="", help="two SoundFonts, comma-separated: which programs they "
                        "play with the same samples")
    parser.add_argument("--tuning", nargs="?", const=soundfont.default_soundfont(), help="which programs symusic's "
                        "synthesizer and ours play in tune, with these SoundFonts (comma-separated; TimGM6mb by default)")
    parser.add_argument("--seek_truth", action="store_true", help="the untrained head seeking the ground truth's "
                        "fine levels: what a perfect prediction of them would give")
    parser.add_argument("--truth_needed", action="store_true", help="how much of the ground truth's fine levels the "
                        "head must know to close half the gap, and what linear predictions of them give")
    parser.add_argument("--learned_choice", action="store_true", help="a learned description of grains trained by "
                        "cross-entropy toward the grains nearest the truth, judged on held-out pieces")
    parser.add_argument("--train_programs", default="", help="--learned_choice: the training triplets' programs "
                        "instead of train.py's")
    parser.add_argument("--music_dir", default="", help="recorded music to use instead of Debian's")
    parser.add_argument("--ckpt", default="", help="--real_music: the checkpoint to judge (default: newest in checkpoints/)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every training run (train.py's default: 10)")
    parser.add_argument("--pairs", type=int, default=200, help="--thresholds: pairs per collection")
    parser.add_argument("--out_dir", default="experiments", help="where the training runs go")
    args = parser.parse_args(argv)
    if not (args.variants or args.thresholds or args.real_music or args.seek_truth or args.truth_needed or args.learned_choice
            or args.tuning or args.shared_samples or args.transcribe_more or args.estimates):
        parser.error("choose --variants, --thresholds, --seek_truth, --truth_needed, --learned_choice, --tuning, "
                     "--shared_samples, --transcribe_more, --estimates or --real_music")
    if args.estimates:
        estimates(args.estimates, args.triplets, args.soundfont)
    if args.transcribe_more:
        transcribe_more(args.transcribe_more, args.steps, args.tilt_db, args.bell_db)
    if args.tuning:
        tuning(args.tuning.split(","))
    if args.shared_samples:
        if len(args.shared_samples.split(",")) != 2:
            parser.error(f"--shared_samples={args.shared_samples!r}: give two SoundFonts, comma-separated")
        shared_samples(*args.shared_samples.split(","))
    if args.seek_truth:
        seek_truth()
    if args.truth_needed:
        truth_needed()
    if args.learned_choice:
        learned_choice(args.train_programs)
    if args.variants:
        unknown = [name for name in args.variants.split(",") if name not in VARIANTS]
        if unknown:
            parser.error(f"unknown variants {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
        variants(args.variants.split(","), args.epochs, args.out_dir)
    if args.thresholds:
        thresholds("", args.pairs, 0)
        if args.music_dir:
            thresholds(args.music_dir, args.pairs, 0)
    if args.real_music:
        ckpt = args.ckpt or next(iter(checkpointing.files("checkpoints") if os.path.isdir("checkpoints") else []), "")
        real_music(args.music_dir, ckpt, args.epochs, args.out_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
