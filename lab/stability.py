"""
What actually causes the NaN that fixed RMS scaling is about: the original design's failure,
condition by condition, in both designs, and which single measure prevents it.

    python -m lab.stability                # quick: 5 conditions, 200 steps a run (docs/nan.md: how long)
    python -m lab.stability --full         # 8 conditions, 3000 steps a run: up to an hour
    python -m lab.stability --conditions=silent_clip --steps=100 --seconds=16   # any conditions, budget, clip length

Every run trains the original design's network (a linear head after per-frame LayerNorms, 1 layer
a stage) on the original design's loss mix (original_objective: reconstruction, an envelope-correlation
penalty, novelty) in float32, first *bare*: correlations without a floor, no clipping,
no NaN abort. Both designs run bare on every condition:
  learnable  the pre-fix design: per stage, learnable a, b, s (rms_input_weights,
             rms_target_weights, rms_scale_logs), target = w_in*rms_in + w_tgt*rms_tgt,
             out = out * target / rms(out) * exp(s); no level normalisation
  fixed      model.Cascade's fixed RMS scaling and level normalisation, as shipped
A design that hits a non-finite loss or gradient is rerun with one measure at a time:
  fixed scaling        (learnable only) its scalars replaced by fixed scaling, nothing else changed
  floored correlation  standard deviations floored at rms_floor (objective.pearson, as train.py does)
  clipping             the total gradient norm clipped at grad_clip (the original design's)
  NaN abort            the training loop's own check (training.check_finite): stop before the step
"""

import csv
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn

from cascade_rms import data, hyperparameters, objective, training
from model import Cascade, MDCTCodec, combined_rms, rms

SCALAR_NAMES = ("rms_input_weights", "rms_target_weights", "rms_scale_logs")


class FixedRaw(Cascade):
    """Fixed RMS scaling with the stages working at the clips' own level."""

    def targets(self, x_in, x_tgt, stage):
        return combined_rms(x_in, x_tgt, self.config.rms_floor)

    def forward(self, x_in, x_tgt):
        floor = self.config.rms_floor
        out1, scale1, *_ = self.stage1([x_in, x_tgt], self.targets(x_in, x_tgt, 0), floor)
        out2, scale2, *_ = self.stage2([x_in, out1, x_tgt], self.targets(x_in, x_tgt, 1), floor)
        return out2, {"out1": out1, "scale1": scale1, "scale2": scale2}


class PreFix(FixedRaw):
    """The pre-fix design: learnable RMS scalars per stage (index 0 and 1, as in the original design's names)."""

    def __init__(self, config):
        super().__init__(config)
        self.rms_input_weights = nn.ParameterList(nn.Parameter(torch.tensor(0.5)) for _ in range(2))
        self.rms_target_weights = nn.ParameterList(nn.Parameter(torch.tensor(0.5)) for _ in range(2))
        self.rms_scale_logs = nn.ParameterList(nn.Parameter(torch.tensor(0.0)) for _ in range(2))

    def targets(self, x_in, x_tgt, stage):
        a, b = self.rms_input_weights[stage].abs(), self.rms_target_weights[stage].abs()
        w_in, w_tgt = a / (a + b + 1e-8), b / (a + b + 1e-8)
        floor = self.config.rms_floor
        return (w_in * rms(x_in, floor) + w_tgt * rms(x_tgt, floor)) * self.rms_scale_logs[stage].exp()

DESIGNS = {"learnable": PreFix, "fixed": Cascade}
MEASURES = ("fixed scaling", "floored correlation", "clipping", "NaN abort")
FIRST_ATTENTION_INPUT = "blocks.0.attn.in_proj.weight"  # a stage's first attention layer's input projection
# train.py's hyperparameters (its seed, weight decay and clipping) with the original network: a
# linear head after per-frame LayerNorms (1 layer a stage: more steps fit the budget). Its loss
# mix as we read the original description: novelty 0.85 (its weight), reconstruction 0.02
# (remedy A's weight) and an envelope-correlation penalty at the remaining 0.15.
ORIGINAL = {**hyperparameters.defaults(), "head": "linear", "frame_norm": True,
            "n_layer": 1, "batch_size": 4, "recon_weight": 0.02, "envelope_weight": 0.15, "novelty_weight": 0.85}
LATENT_LEVEL = 5.7  # RMS of the encoder latents the original design trained on
AUDIO_LEVEL = 0.06  # RMS of the demo music's MDCT frames, about -24 dBFS
ODD_EVERY = 50  # a silent or constant clip is one input in every this many batches, as one file in a collection
CONDITIONS = {  # name: frame level, learning rate, what the batches hold
    "audio": (AUDIO_LEVEL, 1e-4, "music"),
    "latent": (LATENT_LEVEL, 1e-4, "music"),
    "latent_lr1e-3": (LATENT_LEVEL, 1e-3, "music"),
    "latent_lr3e-3": (LATENT_LEVEL, 3e-3, "music"),
    "near_silent": (LATENT_LEVEL, 1e-4, "near-silent"),
    "silent_clip": (LATENT_LEVEL, 1e-4, "silent"),
    "constant_clip": (LATENT_LEVEL, 1e-4, "constant"),
    "audio_silent_clip": (AUDIO_LEVEL, 1e-4, "silent"),
}
QUICK = ("latent", "latent_lr3e-3", "near_silent", "silent_clip", "constant_clip")
BATCH_KINDS = {
    "music": "demo music",
    "near-silent": "a quarter of inputs and of targets at 1e-5 of the level",
    "silent": f"one input of every {ODD_EVERY}th batch all zeros (digital silence)",
    "constant": f"one input of every {ODD_EVERY}th batch constant (every value the level: a DC offset)",
}


def original_objective(out, x_in, x_tgt, hp, correlation_floor):
    """The original design's loss mix on (B, D, T) frames, in float32; correlation_floor 0 is the original design's own Pearson.

    recon     relative squared error to the target (depends on the output's scale)
    envelope  1 - correlation of the output's frame-RMS envelope with the input's
    novelty   squared correlation with input and target at lag 0
    """
    out, x_in, x_tgt = out.float(), x_in.float(), x_tgt.float()
    floor = hp["rms_floor"]

    def envelope(x):  # (B, D, T) -> (B, T)
        return x.pow(2).mean(dim=1).clamp_min(floor**2).sqrt()

    error = (out - x_tgt).pow(2).mean(dim=(1, 2)) / x_tgt.pow(2).mean(dim=(1, 2)).clamp_min(floor**2)
    correlation = (objective.pearson(out, x_in, correlation_floor).pow(2) + objective.pearson(out, x_tgt, correlation_floor).pow(2)) / 2
    terms = {
        "recon": error.mean(),
        "envelope": (1 - objective.pearson(envelope(out), envelope(x_in), correlation_floor)).mean(),
        "novelty": correlation.mean(),
    }
    total = sum(hp[name + "_weight"] * value for name, value in terms.items())
    return total, {name: value.item() for name, value in terms.items()}


def music_batches(hp, seconds, count):
    """`count` batches of demo-music frames, cycled through by every run. # each (B, D, T) x 2"""
    segment = data.seconds_to_samples(seconds, hp["sample_rate"])
    pairs = data.PairDataset(data.demo_tracks(8, max(12.0, 2 * seconds), hp["sample_rate"], hp["seed"]), segment)
    order = np.random.default_rng(hp["seed"]).permutation(np.resize(np.arange(len(pairs)), count * hp["batch_size"]))
    codec = MDCTCodec(hp["frame_dim"])
    batches = (pairs.batch(order[i * hp["batch_size"]:(i + 1) * hp["batch_size"]]) for i in range(count))
    return [(codec.encode(batch.inputs), codec.encode(batch.targets)) for batch in batches]


def condition_batch(x_in, x_tgt, level, kind, step, floor):
    """The batch of `step` under a condition: every clip at `level` RMS, then what the condition adds."""
    x_in, x_tgt = x_in / rms(x_in, floor) * level, x_tgt / rms(x_tgt, floor) * level
    if kind == "near-silent":
        quarter = max(1, len(x_in) // 4)
        x_in[:quarter] *= 1e-5
        x_tgt[quarter:2 * quarter] *= 1e-5
    elif kind in ("silent", "constant") and step % ODD_EVERY == 0:
        x_in[0] = 0.0 if kind == "silent" else level
    return x_in, x_tgt


def non_finite(values):
    return not all(math.isfinite(v) for v in values)


def named(top):
    return ", ".join(f"{name} {norm:.3g}" for name, norm in top)


def train_condition(design, measure, condition, batches_, hp, steps, writer):
    """Train one design under one condition with at most one measure on; returns what happened."""
    level, lr, kind = CONDITIONS[condition]
    floor = hp["rms_floor"]
    correlation_floor = floor if measure == "floored correlation" else 0.0
    max_norm = hp["grad_clip"] if measure == "clipping" else math.inf
    torch.manual_seed(hp["seed"])
    model = (FixedRaw if measure == "fixed scaling" else DESIGNS[design])(hyperparameters.cascade_config(hp))
    optimizer = training.optimizer_for(model, lr, hp["weight_decay"])
    r = {"condition": condition, "design": design, "measure": measure or "bare", "first_nonfinite": None,
         "weights": "finite", "norms": [], "ratios": [], "peak": (0.0, 0, []), "spike": (0.0, 0, [])}
    for step in range(1, steps + 1):
        x_in, x_tgt = condition_batch(*batches_[(step - 1) % len(batches_)], level, kind, step, floor)
        out, stats = model(x_in, x_tgt)
        loss, terms = original_objective(out, x_in, x_tgt, hp, correlation_floor)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        per_param = training.gradient_norms(model)
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads).item()
        top = training.largest_gradients(per_param, 3)
        scalar = [v for name, v in per_param.items() if name.startswith(SCALAR_NAMES)]
        ratio = max(scalar) / max(statistics.median(per_param.values()), 1e-30) if scalar else float("nan")
        writer.writerow([condition, design, r["measure"], step, loss.item(), *terms.values(), grad_norm,
                         stats["scale1"].mean().item(), stats["scale2"].mean().item(), ratio, named(top)])
        if non_finite([loss.item(), grad_norm]):
            r["first_nonfinite"] = step
            r["terms"], r["top_finite"], r["n_gradients"] = terms, top, len(per_param)
            r["bad_gradients"] = sum(not math.isfinite(v) for v in per_param.values())
            if measure == "NaN abort":
                try:
                    training.check_finite(step, loss.item(), terms, grad_norm, model, lambda: model(x_in, x_tgt), 3, None)
                except training.NonFiniteError:
                    r["weights"] = "intact"  # the loop stops here with its report, before the optimizer step
                break
        torch.nn.utils.clip_grads_with_norm_(grads, max_norm, grad_norm)
        optimizer.step()
        if r["first_nonfinite"]:
            if non_finite([p.detach().abs().max().item() for p in model.parameters()]):
                r["weights"] = "non-finite"
            break
        if len(r["norms"]) >= 5 and grad_norm > max(10 * statistics.median(r["norms"]), r["spike"][0]):
            r["spike"] = (grad_norm, step, top)  # the largest step over 10x the median of those before it
        r["norms"].append(grad_norm)
        r["ratios"].append(ratio)
        if grad_norm > r["peak"][0]:
            r["peak"] = (grad_norm, step, top)
    return r


def scalars_signature(top):
    """The original design's epoch-5 log: the top three gradients are the three RMS scalars of one stage, within 10%."""
    names = {name.rsplit(".", 1)[0] for name, _ in top}
    stages = {name.rsplit(".", 1)[-1] for name, _ in top}
    return len(top) == 3 and names == set(SCALAR_NAMES) and len(stages) == 1 and top[2][1] >= 0.9 * top[0][1]


def row_line(r):
    if r["first_nonfinite"]:
        terms = ", ".join(f"{k} {v:.3g}" for k, v in r["terms"].items())
        what = (f"step {r['first_nonfinite']:<6} weights {r['weights']:<10}  {terms}; {r['bad_gradients']} of "
                f"{r['n_gradients']} gradients non-finite" + (f"; top finite: {named(r['top_finite'])}" if r["top_finite"] else ""))
    else:
        peak, at, top = r["peak"]
        ratio = [x for x in r["ratios"] if x == x]
        scalars = f"; scalar/median grad {statistics.median(ratio):.3g} (max {max(ratio):.3g})" if ratio else ""
        spike = f"largest spike {r['spike'][0]:.3g} at step {r['spike'][1]} ({r['spike'][2][0][0]})" if r["spike"][1] else "no spike"
        what = (f"{'none':<11} weights {r['weights']:<10}  grad norm median {statistics.median(r['norms']):.3g}, "
                f"max {peak:.3g} at step {at} ({named(top)}); {spike}{scalars}")
    return f"  {r['design']:<10} {r['measure']:<20} {what}"


def prevented_by(runs, design):
    """The measures that, each alone, kept a design's failing condition finite or its weights intact."""
    if not any(r["design"] == design and r["measure"] == "bare" and r["first_nonfinite"] for r in runs):
        return "-"
    fixes = [r["measure"] + (" (stops, weights intact)" if r["measure"] == "NaN abort" else "")
             for r in runs if r["design"] == design and r["measure"] != "bare"
             and (not r["first_nonfinite"] or r["weights"] == "intact")]
    return ", ".join(fixes) or "none of the four"


def summary(results):
    """One line per condition: each design's bare outcome, and what prevents a failure."""
    lines = [f"{'condition':<22} {'learnable, bare':<16} {'fixed, bare':<16} {'scalar/median':>13}  prevented by (either design)"]
    for condition, runs in results.items():
        bare = {r["design"]: r for r in runs if r["measure"] == "bare"}
        outcome = {d: f"NaN at step {r['first_nonfinite']}" if r["first_nonfinite"] else "finite" for d, r in bare.items()}
        ratio = [x for x in bare["learnable"]["ratios"] if x == x]
        fixes = sorted({prevented_by(runs, d) for d in DESIGNS} - {"-"})
        lines.append(f"{condition:<22} {outcome['learnable']:<16} {outcome['fixed']:<16} "
                     f"{statistics.median(ratio) if ratio else float('nan'):>13.3g}  {' / '.join(fixes) or '-'}")
    return lines


def claims(results):
    """The original design's claims and the earlier probing's hypotheses, each: holds / does not hold, with the numbers."""
    bare = [r for runs in results.values() for r in runs if r["measure"] == "bare"]
    nan = {d: sorted(r["condition"] for r in bare if r["design"] == d and r["first_nonfinite"]) for d in DESIGNS}
    ratios = {r["condition"]: statistics.median(x for x in r["ratios"] if x == x)
              for r in bare if r["design"] == "learnable" and r["ratios"]}
    large = {c: v for c, v in ratios.items() if v >= 100}
    odd = [c for c in results if CONDITIONS[c][2] in ("silent", "constant")]
    odd_runs = [r for r in bare if r["condition"] in odd]
    floor_fixes = all("floored correlation" in prevented_by(results[c], d) for c in odd for d in DESIGNS)
    signature = sorted({r["condition"] for r in bare if r["peak"][2] and scalars_signature(r["peak"][2])})
    latent = {c: v for c, v in ratios.items() if CONDITIONS[c][0] == LATENT_LEVEL and CONDITIONS[c][2] == "music"}
    low_lr = [v for c, v in latent.items() if CONDITIONS[c][1] < 3e-3]
    high_lr = [v for c, v in latent.items() if CONDITIONS[c][1] >= 3e-3]
    spiky = [r for r in bare if CONDITIONS[r["condition"]][1] >= 1e-3 and r["spike"][1]]
    lines = [
        ("learnable RMS scalars get 100-10,000x larger gradients than the median parameter",
         "holds" if large else "does not hold",
         "median ratio per run: " + ", ".join(f"{c} {v:.3g}" for c, v in ratios.items())),
        ("learnable RMS scaling diverges to NaN and fixed scaling does not",
         "holds" if set(nan["learnable"]) - set(nan["fixed"]) else "does not hold",
         f"learnable NaN under {nan['learnable'] or 'no condition'}; fixed under {nan['fixed'] or 'no condition'}"),
        ("an unfloored correlation turns every gradient NaN once a batch holds a silent or constant clip",
         "holds" if odd_runs and all(r["first_nonfinite"] and r["bad_gradients"] == r["n_gradients"] for r in odd_runs)
         and floor_fixes else "does not hold",
         "; ".join(f"{r['design']} {r['condition']}: " + (f"NaN at step {r['first_nonfinite']}, {r['bad_gradients']} of "
                                                            f"{r['n_gradients']} gradients" if r["first_nonfinite"] else "finite")
                   for r in odd_runs) + (" ; the floor alone prevents each" if floor_fixes else "")),
        ("three nearly equal top gradients for one stage's three scalars is what that NaN looks like",
         "holds" if any(r["first_nonfinite"] and scalars_signature(r["top_finite"]) for r in bare) else "does not hold",
         "at a NaN every gradient is NaN; the signature (the three scalars of one stage on top, within 10%) appears "
         f"at the largest gradient norm of: {signature or 'no run'}"),
        ("at latent level the scalars' gradients are 25-125x the median's below lr 3e-3, >= 1000x only at lr >= 3e-3",
         "holds" if low_lr and high_lr and all(25 <= v <= 125 for v in low_lr) and min(high_lr) >= 1000 else "does not hold",
         ", ".join(f"{c} {v:.3g}" for c, v in latent.items())),
        ("spikes in the gradient norm at lr >= 1e-3 come from the first attention layer's input projection",
         "holds" if spiky and all(r["spike"][2][0][0].endswith(FIRST_ATTENTION_INPUT) for r in spiky)
         else "does not hold",
         "; ".join(f"{r['design']} {r['condition']}: {r['spike'][0]:.3g} at step {r['spike'][1]} ({r['spike'][2][0][0]})"
                   for r in spiky) or "no step over 10x the median before it"),
    ]
    return [f"{verdict:<14} {claim}: {numbers}" for claim, verdict, numbers in lines]


def main(argv):
    options = {"steps": 0, "seconds": 1.0, "conditions": "", "out_dir": "stability", "full": False}
    for arg in argv:
        name, _, value = arg.removeprefix("--").partition("=")
        if name not in options:
            raise SystemExit(f"unknown option {arg!r}; valid: --full, --steps=N, --seconds=S, --conditions=A,B, --out_dir=PATH")
        try:
            options[name] = True if name == "full" else type(options[name])(value)
        except ValueError:
            raise SystemExit(f"--{name}={value!r}: expected a {type(options[name]).__name__}") from None
    steps = options["steps"] or (3000 if options["full"] else 200)
    if steps < 1 or options["seconds"] <= 0:
        raise SystemExit(f"--steps={steps} and --seconds={options['seconds']} must be positive")
    hp = ORIGINAL
    conditions = options["conditions"].split(",") if options["conditions"] else list(CONDITIONS if options["full"] else QUICK)
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise SystemExit(f"unknown conditions {','.join(unknown)}; valid: {','.join(CONDITIONS)}")
    batches_ = music_batches(hp, options["seconds"], min(steps, 64))
    os.makedirs(options["out_dir"], exist_ok=True)
    records = os.path.join(options["out_dir"], "stability_records.csv")
    results, t0 = {}, time.time()
    with open(records, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["condition", "design", "measure", "step", "loss", "recon", "envelope", "novelty", "grad_norm",
                         "scale1", "scale2", "max_scalar_grad_ratio", "top_gradient"])
        for condition in conditions:
            level, lr, kind = CONDITIONS[condition]
            print(f"\n== {condition}: frames at RMS {level:g}, lr {lr:g}, {BATCH_KINDS[kind]}; "
                  f"{steps} steps of {hp['batch_size']} x {options['seconds']:g} s", flush=True)
            runs = []
            for design in DESIGNS:
                runs.append(train_condition(design, None, condition, batches_, hp, steps, writer))
                print(row_line(runs[-1]), flush=True)
                if runs[-1]["first_nonfinite"]:
                    for measure in [m for m in MEASURES if not (design == "fixed" and m == "fixed scaling")]:
                        runs.append(train_condition(design, measure, condition, batches_, hp, steps, writer))
                        print(row_line(runs[-1]), flush=True)
            results[condition] = runs
    print("\n" + "\n".join(summary(results)))
    print("\n" + "\n".join(claims(results)))
    print(f"\nper-step records: {records} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])
