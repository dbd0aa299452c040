"""
What stage 2's grains should be nearest, on a checkpoint's held-out triplets: the fixed fit
through stage 1's notes or the scores', the input's spectrum, Let it Bee's output; and whether
Let it Bee's own mosaic, made toward the fit instead of the input, plays it better (docs/LOG.md,
issue 36).

    python -m lab.estimates checkpoints/epoch_6_step_1034.pth --triplets=24
"""

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

from cascade_rms import baselines, checkpointing, groundtruth, hyperparameters, scores, training
from lab import load_checkpoint
from model import Cascade, CascadeConfig, MDCTCodec


@torch.no_grad()
def estimates(path, n_triplets, soundfont=""):
    """Ways to choose stage 2's grains, each by the grain nearest a wanted mel spectrum, on held-out
    triplets of a checkpoint trained on scores: the fixed fit (NoteSpectra) through stage 1's notes
    or the scores' (of input, material or both), the input's own spectrum, Let it Bee's output;
    beside them the nearest-neighbour head and Let it Bee, and Let it Bee's mosaic of the material
    toward the fit (on its own STFT grid) or toward the truth itself. LSD to the truth, by the
    input's program too: where do transcription errors cost, and does the estimate beat Let it Bee
    when notes are right?"""
    state = load_checkpoint(path)
    stored = {**checkpointing.stored_config(state), "estimate": True}
    model = Cascade(CascadeConfig(**stored)).eval()
    model.load_state_dict(state["model"], strict=False)  # a checkpoint before estimate: its stage 1, a fresh fit
    nearest = Cascade(CascadeConfig(**{**stored, "estimate": False})).eval()
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
        by_stage1 = model.describe(batch.materials, batch.material_lengths).at_unit_level(torch.ones(1), head.chunk_frames)
        by_scores = model.describe(batch.materials, batch.material_lengths, batch.material_rolls).at_unit_level(
            torch.ones(1), head.chunk_frames)
        transcribed = model.transcribe(x, y) > 0
        bee = baselines.let_it_bee(x_in, material[:length], seed=i)

        def mel_of(audio):  # at the material's unit level, as the corpus is described
            return spectra.mel_db(spectra.power(torch.as_tensor(audio).float().view(1, -1) / by_stage1.mel_level[:, None]))

        def mosaic_toward(magnitudes):  # Let it Bee's mosaic of the material toward a spectrogram on its grid
            return baselines.at_level(baselines.mosaic(magnitudes, material[:length], len(x_in), i), x_in, material[:length])

        def mosaic_toward_fit(material_roll, input_roll):  # on Let it Bee's grid: every 4th of the model's frames
            power = baselines.stft_magnitudes(material[:length]) ** 2  # (F, M)
            M, step = power.shape[1], baselines.LET_IT_BEE_HOP // model.config.frame_dim
            rolls = [F.pad(r[::step][:frames].float(), (0, 0, 0, frames - len(r[::step][:frames])))
                     for r, frames in ((material_roll, M), (input_roll, len(x_in) // baselines.LET_IT_BEE_HOP + 1))]
            fitted = spectra.fit(*spectra.statistics(torch.from_numpy(power.T)[None], rolls[0][None]))[0]
            wanted = F.pad(rolls[1], (0, 1), value=1.0) @ fitted.T  # (frames, F): power
            return mosaic_toward(wanted.sqrt().T.double().numpy())

        def nearest_to(wanted, corpus):
            grains = 3 * x.shape[2] + head.nearest(wanted, corpus)[..., None]
            return codec.decode(head.player(torch.ones(grains.shape), grains, [x] * 3, corpus), len(truth))[0].numpy()

        systems = {
            "fit, stage 1's notes": nearest_to(spectra.fixed_fit(by_stage1.spectra, transcribed), by_stage1),
            "fit, the scores' notes": nearest_to(spectra.fixed_fit(by_scores.spectra, batch.rolls), by_scores),
            "fit, the scores' notes of the material": nearest_to(spectra.fixed_fit(by_scores.spectra, transcribed), by_scores),
            "fit, the scores' notes of the input": nearest_to(spectra.fixed_fit(by_stage1.spectra, batch.rolls), by_stage1),
            "the input's own spectrum": nearest_to(mel_of(x_in), by_stage1),
            "Let it Bee's output": nearest_to(mel_of(bee), by_stage1),
            "nearest-neighbour head": codec.decode(nearest(x, y, training.encode(nearest, codec, batch, "cpu", {})[2])[0],
                                                   len(truth))[0].numpy(),
            "Let it Bee": bee,
            "Let it Bee toward the fit, stage 1's notes": mosaic_toward_fit(
                model.transcribe_recording(torch.from_numpy(material[:length])[None])[0], transcribed[0]),
            "Let it Bee toward the fit, the scores' notes": mosaic_toward_fit(
                batch.material_rolls[0, : length // model.config.frame_dim + 1] > 0, batch.rolls[0] > 0),
            "Let it Bee toward the truth": mosaic_toward(baselines.stft_magnitudes(truth)),
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
    parser = argparse.ArgumentParser(prog="python -m lab.estimates", description=__doc__.strip().splitlines()[0])
    parser.add_argument("ckpt", help="a checkpoint trained on scores")
    parser.add_argument("--triplets", type=int, default=30, help="held-out triplets")
    parser.add_argument("--soundfont", default="", help="render the triplets with this SoundFont instead")
    args = parser.parse_args(argv)
    estimates(args.ckpt, args.triplets, args.soundfont)


if __name__ == "__main__":
    main(sys.argv[1:])
