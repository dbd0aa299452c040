"""
A learned description of grains, trained toward the grains nearest the truth for 1500 steps and
judged on held-out pieces (docs/LOG.md, issue 31).

    python -m lab.learned_choice
    python -m lab.learned_choice --train_programs=0,1,...   # other training programs
"""

import argparse
import sys

import numpy as np
import torch

from cascade_rms import groundtruth, scores
from lab import runs
from model import Cascade, CascadeConfig, combined_rms


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
    train, held_out, rate = runs.default_triplets(train_programs)
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


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m lab.learned_choice", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--train_programs", default="", help="the training triplets' programs instead of train.py's")
    learned_choice(parser.parse_args(argv).train_programs)


if __name__ == "__main__":
    main(sys.argv[1:])
