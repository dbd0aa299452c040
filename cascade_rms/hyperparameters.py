"""
train.py's hyperparameters: the one place their values are written is the fenced block
at the top of train.py, and the model's are CascadeConfig's defaults in model.py. Every
script that needs them reads them from there (defaults, or of_script for a script's own block), so
no copy can go stale; train.py is read as text, never imported (a script imports no script).
Command-line overrides (--name=value) are typed like the value they replace.
"""

import os
from dataclasses import asdict, fields

from model import CascadeConfig

TRAIN_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train.py")

BLOCK_START = "# ----------------------------------------------------------------------------- hyperparameters"
BLOCK_END = "# -----------------------------------------------------------------------------"
VALUE_TYPES = (bool, int, float, str)


def of_script(path):
    """Every field of CascadeConfig at its default, then what the script's fenced block sets
    (a model field too: n_layer = 4 there replaces the default). # {name: value}"""
    with open(path) as f:
        text = f.read()
    start = text.find(BLOCK_START)
    end = text.find(BLOCK_END, start + len(BLOCK_START))
    assert start >= 0 and end > start, f"{path} has no hyperparameter block"
    # padded with the lines before it, so an error in the block names its line in the file
    block = "\n" * text[:start].count("\n") + text[start:end]
    namespace = {}
    exec(compile(block, path, "exec"), namespace)
    values = {name: value for name, value in namespace.items() if not name.startswith("_")}
    defaults = asdict(CascadeConfig())
    for name, value in values.items():
        if not isinstance(value, VALUE_TYPES):
            raise SystemExit(f"{path}: hyperparameter {name} = {value!r} must be a bool, int, float or str")
        if name in defaults and not same_kind(value, defaults[name]):
            raise SystemExit(f"{path}: {name} = {value!r} must be {type(defaults[name]).__name__} like "
                             f"CascadeConfig's {defaults[name]!r}")
    return {**defaults, **values}


def defaults():
    """What a plain run of train.py uses: its block read from TRAIN_SCRIPT. # {name: value}"""
    return of_script(TRAIN_SCRIPT)


def same_kind(value, default):
    """Whether value may stand where default does (an int for a float, not a bool for an int)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    return isinstance(value, type(default)) or (isinstance(default, float) and isinstance(value, int))


def parse_overrides(argv, defaults):
    """--name=value for any hyperparameter, typed like its default."""
    hp = dict(defaults)
    for arg in argv:
        name, eq, text = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or not eq:
            raise SystemExit(f"cannot read argument {arg!r}: write hyperparameters as --name=value")
        if name not in hp:
            raise SystemExit(f"unknown hyperparameter {name!r}; valid names: {', '.join(sorted(hp))}")
        kind = type(defaults[name])
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                hp[name] = text.lower() in ("true", "1")
            else:
                hp[name] = kind(text)
        except ValueError:
            raise SystemExit(f"--{name}={text}: expected {kind.__name__} like the default {defaults[name]!r}") from None
    return hp


def check_values(hp):
    positive = ["sample_rate", "segment_seconds", "demo_pieces", "demo_seconds", "score_pieces", "frame_dim", "n_layer", "n_head",
                "lr", "grad_clip", "batch_size", "epochs", "keep_checkpoints", "log_interval", "top_k", "transcribe_steps",
                "transcribe_batch", "transcribe_lr", "note_fft", "focus_excerpts"]
    for name in positive:
        if not hp[name] > 0:
            raise SystemExit(f"--{name}={hp[name]} must be > 0")
    for name in ("transcribe_epochs", "epoch_triplets", "augment_gain_db", "augment_tilt_db", "augment_bell_db", "notes_weight",
                 "program_focus"):
        if not hp[name] >= 0:
            raise SystemExit(f"--{name}={hp[name]} must be >= 0")
    if not 0 < hp["val_fraction"] < 1:
        raise SystemExit(f"--val_fraction={hp['val_fraction']} must be between 0 and 1")
    if hp["dataset"] not in ("scores", "demo"):
        raise SystemExit(f"--dataset={hp['dataset']} must be scores or demo (your own audio: --data_dir)")
    if not hp["material_seconds"] >= hp["segment_seconds"]:
        raise SystemExit(f"--material_seconds={hp['material_seconds']} must be at least --segment_seconds="
                         f"{hp['segment_seconds']}: the target clip lies in the material")
    if hp["dtype"] not in ("auto", "float32", "bfloat16"):
        raise SystemExit(f"--dtype={hp['dtype']} must be auto, float32 or bfloat16")
    if hp["device"] not in ("auto", "cpu", "cuda"):
        raise SystemExit(f"--device={hp['device']} must be auto, cpu or cuda")


def section(cls, hp):
    """The dataclass cls (CascadeConfig, a module's config) with its fields from hp.

    A module's config (ScoresConfig, DataConfig, LossWeights, StepConfig) names the few values of
    train.py's block the module reads, so the module states what it depends on and takes no hp
    dict; its fields have no defaults, so each value is still written once, in train.py's block
    (a test checks both)."""
    return cls(**{f.name: hp[f.name] for f in fields(cls)})


def cascade_config(hp):
    """The model's CascadeConfig from hp, or a SystemExit naming the value it refuses."""
    try:
        return section(CascadeConfig, hp)
    except ValueError as e:
        raise SystemExit(f"bad model hyperparameters: {e}") from None
