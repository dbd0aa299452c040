"""cascade_rms/hyperparameters.py: train.py's block is the one source of every value, read where it is set."""

import os
from dataclasses import asdict, fields

import pytest

from helpers import DEFAULTS, ROOT
from cascade_rms import hyperparameters
from model import CascadeConfig


def test_overrides_are_type_checked_and_unknown_names_rejected():
    assert hyperparameters.parse_overrides(["--lr=3e-4", "--epochs=2", "--shuffle_targets=true"], DEFAULTS) == {
        **DEFAULTS, "lr": 3e-4, "epochs": 2, "shuffle_targets": True}
    with pytest.raises(SystemExit, match="expected int"):
        hyperparameters.parse_overrides(["--epochs=ten"], DEFAULTS)
    with pytest.raises(SystemExit, match="expected bool"):
        hyperparameters.parse_overrides(["--shuffle_targets=maybe"], DEFAULTS)
    with pytest.raises(SystemExit, match="unknown hyperparameter 'learning_rate'.*valid names: .*lr"):
        hyperparameters.parse_overrides(["--learning_rate=1e-3"], DEFAULTS)
    with pytest.raises(SystemExit, match="--name=value"):
        hyperparameters.parse_overrides(["epochs=3"], DEFAULTS)


def test_the_block_is_read_where_it_is_written_and_the_model_fields_where_theirs_are(tmp_path):
    """train.py's values come from its block alone and the model's from CascadeConfig alone:
    an edit to either reaches every script that reads them (the lab),
    and a value of the wrong kind is refused naming its line."""
    assert hyperparameters.cascade_config(DEFAULTS) == CascadeConfig()
    assert {k: DEFAULTS[k] for k in asdict(CascadeConfig())} == asdict(CascadeConfig())
    with open(os.path.join(ROOT, "train.py")) as f:
        text = f.read()
    edited = tmp_path / "train.py"
    edited.write_text(text.replace('\nlr = 1e-4\n', '\nlr = 3e-4\nn_layer = 4\n'))
    read = hyperparameters.of_script(edited)
    assert read == {**DEFAULTS, "lr": 3e-4, "n_layer": 4}
    edited.write_text(text.replace('\nlr = 1e-4\n', '\nlr = [1e-4]\n'))
    with pytest.raises(SystemExit, match="lr = \\[0.0001\\] must be a bool, int, float or str"):
        hyperparameters.of_script(edited)
    edited.write_text(text.replace('\nlr = 1e-4\n', '\nlr = 1e-4\nn_layer = "four"\n'))
    with pytest.raises(SystemExit, match="n_layer = 'four' must be int like CascadeConfig's 2"):
        hyperparameters.of_script(edited)
    edited.write_text(text.replace('\nlr = 1e-4\n', '\nlr = 1e-4 +\n'))
    with pytest.raises(SyntaxError) as error:
        hyperparameters.of_script(edited)
    assert error.value.lineno == text[: text.index("\nlr = 1e-4\n")].count("\n") + 2


def test_no_script_keeps_a_copy_of_a_hyperparameter():
    """The scripts that run train.py's step or data (the lab) take its values
    from train.py's block: none writes its own."""
    from lab import bench
    from lab import stability
    assert bench.HYPERPARAMETERS == DEFAULTS
    changed = {"head", "frame_norm", "n_layer", "batch_size", "recon_weight", "envelope_weight", "novelty_weight"}
    assert {k: v for k, v in stability.ORIGINAL.items() if k not in changed} == {k: v for k, v in DEFAULTS.items() if k not in changed}


def test_the_transcriptions_hyperparameters_are_checked_naming_the_value():
    for name, value, message in (("transcribe_steps", 0, "must be > 0"), ("transcribe_lr", -1e-3, "must be > 0"),
                                 ("transcribe_epochs", -1, "must be >= 0"), ("augment_bell_db", -3.0, "must be >= 0")):
        with pytest.raises(SystemExit, match=f"--{name}={value} {message}"):
            hyperparameters.check_values({**DEFAULTS, name: value})
    hyperparameters.check_values(dict(DEFAULTS))  # the defaults pass


def test_a_modules_config_names_values_of_train_pys_block_and_writes_none_of_them():
    """ScoresConfig, DataConfig, LossWeights and StepConfig repeat names of train.py's block, not
    values: every field is in the block and none has a default, so an edit to the block is the
    only way to change one."""
    from dataclasses import MISSING

    from cascade_rms import data, objective, scores, training
    for config in (scores.ScoresConfig, data.DataConfig, objective.LossWeights, training.StepConfig):
        for field in fields(config):
            assert field.name in DEFAULTS, f"{config.__name__}.{field.name} is not in train.py's block"
            assert field.default is MISSING and field.default_factory is MISSING, f"{config.__name__}.{field.name} has a default"
        assert hyperparameters.section(config, DEFAULTS) == config(**{f.name: DEFAULTS[f.name] for f in fields(config)})
