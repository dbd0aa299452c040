"""
The health report printed after every epoch and by generate.py: one line per
indicator, a ✅ or ⚠ each, with the healthy range beside the value.
"""

import numpy as np
import torch

from model import combined_rms, rms

from .objective import pearson
from .verdict import (
    COPY_CORRELATION,
    FLAT_ENVELOPE,
    MAX_LAG_SECONDS,
    VERDICTS,
    envelope_db,
    verdict,
)

HEALTHY_GRAD_NORM = 100.0
LEARNING_GRAD_NORM = 1e-6  # an epoch whose largest pre-clip gradient norm stays below this learns nothing
HEALTHY_NOTE_F1 = 0.5  # frame F1 of stage 1's transcription on the held-out triplets
HEALTHY_SCALE = (0.8, 1.2)  # stage scale factors and the output/input RMS ratio
HEALTHY_CORRELATION = 0.3
HEALTHY_BLEND_SHARE = 0.8  # of validation pairs judged blend
ENVELOPE_COLUMNS = 48
ENVELOPE_SHADES = " ░▒▓█"  # blank = silent ... █ = loud, on one absolute dB scale
ENVELOPE_RANGE_DB = (-60.0, 0.0)
WHAT_WENT_WRONG = {
    "copy": f"copy: the output repeats a source within {MAX_LAG_SECONDS:g} s (|correlation| >= {COPY_CORRELATION}); "
            "raise --copy_weight or --min_shift_frames",
    "hiss": "hiss: the output is noise-like (its spectrum holds no notes, or its loudness does not move); the original design's "
            "remedies (--recon_weight, --final_residual, --novelty_weight) do not fix this (docs/LOG.md): use "
            "--head=pointer --frame_norm=False with --follow_weight > 0",
    "unrelated": "unrelated: the output's average spectrum is as far from both clips as another piece's; raise "
                 "--sound_weight (the target's sound) or --follow_weight (the input's band levels)",
}


def envelope_bars(db):
    low, high = ENVELOPE_RANGE_DB
    levels = np.clip((db - low) / (high - low), 0, 1) * (len(ENVELOPE_SHADES) - 1)
    return "".join(ENVELOPE_SHADES[int(round(v))] for v in levels)


def mark(ok):
    return "✅" if ok else "⚠"


def output_health(out, x_in, x_tgt, floor):
    """Per-sample output/input RMS ratio and lag-0 correlations with input and target.
    Frames (B, D, T) and audio (B, 1, N) give the same numbers: the codec is orthonormal. # -> each (B,)"""
    return {"rms_ratio": (rms(out, floor) / rms(x_in, floor)).view(-1),
            "corr_in": pearson(out, x_in, floor), "corr_tgt": pearson(out, x_tgt, floor)}


def generation_health(scales, in_audio, tgt_audio, out_audio, floor):
    """What generate.py reports of the scaling. Fixed RMS scaling sets every window to the
    combined level sqrt((in^2 + tgt^2) / 2) of its input and target, so the output's RMS
    over the songs' combined RMS ('level rule') is ~1 unless windows are joined or scaled
    wrong. The stage scale factors are no fault signal here: the grains follow the input's
    loudness, and where the input is much quieter or louder than the target (two songs,
    unlike a training pair), the scaling moves them to the combined level, far from 1 with a
    healthy checkpoint (docs/generation.md). scales: (windows, 2)."""
    audio = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).view(1, 1, -1) for a in (in_audio, tgt_audio, out_audio)]
    gap = 20 * np.log10(rms(audio[0], floor).item() / rms(audio[1], floor).item())
    return {"level_rule": (rms(audio[2], floor) / combined_rms(audio[0], audio[1], floor)).item(),
            "scale1_range": np.percentile(scales[:, 0], [10, 50, 90]), "scale2_range": np.percentile(scales[:, 1], [10, 50, 90]),
            "level_gap_db": gap}


def judged_health(judged, sample):
    """Health numbers from verdict.blend_metrics() of every validation output, and the loudness
    envelopes of one sample (input, target, output audio) for the bars."""
    verdicts = [verdict(m) for m in judged]
    shares = {f"{v}_share": verdicts.count(v) / len(verdicts) for v in VERDICTS}
    columns = max(1, len(sample[0]) // ENVELOPE_COLUMNS)
    bars = {f"envelope_{name}": envelope_db(audio, columns) for name, audio in zip(("input", "target", "output"), sample)}
    return {**shares, "pairs": len(judged), "envelope": float(np.median([m["envelope"] for m in judged])), **bars}


def health_lines(h, grad_norms=None):
    """The health report: one line per indicator, a ✅ or ⚠ each. Returns (lines, warnings)."""
    lines, warnings = [], []

    def check(name, ok, text):
        lines.append(f"  {mark(ok)} {text}")
        if not ok:
            warnings.append(name)

    if grad_norms:
        gmax, gmed = max(grad_norms), float(np.median(grad_norms))
        check("grad_norm", gmax < HEALTHY_GRAD_NORM,
              f"gradient norms   max {gmax:.3g}, median {gmed:.3g} (healthy < {HEALTHY_GRAD_NORM:g})")
        if gmax < LEARNING_GRAD_NORM:
            check("nothing_learns", False, f"nothing is learning: no gradient norm of the epoch reached "
                                           f"{LEARNING_GRAD_NORM:g}, so no weight moved")
    if "note_f1" in h:
        check("note_f1", h["note_f1"] >= HEALTHY_NOTE_F1, f"transcription    frame F1 {h['note_f1']:.3f} on the held-out "
              f"triplets' inputs (healthy >= {HEALTHY_NOTE_F1})")
    if "estimate_db" in h:
        lines.append(f"      estimate         stage 2's estimate of the truth's mel spectrum is {h['estimate_db']:.2f} dB from "
                     f"it (log-spectral distance on the held-out triplets; lower: nearer)")
    low, high = HEALTHY_SCALE
    if "level_rule" in h:  # generate.py: two songs, not a training pair (generation_health)
        check("level_rule", low <= h["level_rule"] <= high, f"level rule       output RMS {h['level_rule']:.3f}x the songs' "
              f"combined RMS (healthy {low}-{high}; input {h['level_gap_db']:+.1f} dB against the target)")
        for key, what in (("scale1_range", "stage-1 scale"), ("scale2_range", "stage-2 scale")):
            p10, median, p90 = h[key]
            lines.append(f"      {what} factors, median {median:.2f} (10-90%: {p10:.2f}-{p90:.2f} over windows): "
                         f"they follow the songs' level gap, not faults")
    else:
        for key, what in (("scale1", "stage-1 scale factor"), ("scale2", "stage-2 scale factor"), ("rms_ratio", "output/input RMS")):
            check(key, low <= h[key] <= high, f"{what:<16} {h[key]:.3f} (healthy {low}-{high})")
    check("constant_output", h["envelope"] >= FLAT_ENVELOPE,
          f"temporal structure: output envelope {h['envelope']:.2f}x the sources' range (constant output below {FLAT_ENVELOPE})")
    for key in ("input", "target", "output"):
        lines.append(f"      {key:<7}|{envelope_bars(h['envelope_' + key])}|")
    pairs = f"{h['pairs']} validation pairs" if h["pairs"] > 1 else "the output"
    check("not_a_blend", h["blend_share"] >= HEALTHY_BLEND_SHARE,
          f"blend verdict    {h['blend_share']:.0%} of {pairs} blend, {h['copy_share']:.0%} copy, {h['hiss_share']:.0%} hiss, "
          f"{h['unrelated_share']:.0%} unrelated "
          f"(healthy >= {HEALTHY_BLEND_SHARE:.0%} blend)")
    for failure in WHAT_WENT_WRONG:
        if h[f"{failure}_share"] > 1 - HEALTHY_BLEND_SHARE:
            lines.append(f"      {WHAT_WENT_WRONG[failure]}")
    for key, what in (("corr_in", "output->input"), ("corr_tgt", "output->target")):
        check(key, abs(h[key]) < HEALTHY_CORRELATION, f"correlation {what:<14} {h[key]:+.3f} (healthy below {HEALTHY_CORRELATION})")
    return lines, warnings
