"""The layout: the top level holds the network, the loop and the scripts a user runs; lab/ holds the
experiments and measurements behind docs/; cascade_rms/ holds the modules they share. Nothing
imports a script, and the one script read as text, train.py (its hyperparameter block), is read
through hyperparameters.defaults alone."""

import ast
import glob
import os

from cascade_rms import hyperparameters
from helpers import ROOT

USER_SCRIPTS = {"train", "generate", "evaluate", "plot", "test_model"}
LAB_MODULES = {"runs", "seeking"}  # what the lab's experiments share


def imports_of(path):
    """Every module a file imports, named from the root: `from lab import runs` is lab.runs."""
    tree = ast.parse(open(path).read())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            package = node.module if node.level == 0 else ".".join(
                [os.path.basename(os.path.dirname(path)), *([node.module] if node.module else [])])
            imported.add(package)
            imported |= {f"{package}.{alias.name}" for alias in node.names}
    return imported


def calls(path, function):
    """Whether a file calls `function` (as a name or an attribute: hyperparameters.defaults())."""
    return any(isinstance(node, ast.Call) and function in (getattr(node.func, "attr", None), getattr(node.func, "id", None))
               for node in ast.walk(ast.parse(open(path).read())))


def is_script(path):
    return '__name__ == "__main__"' in open(path).read()


def python_files(folder):
    return {os.path.basename(p)[:-3]: p for p in glob.glob(os.path.join(ROOT, folder, "*.py"))}


def test_user_scripts_at_the_top_the_lab_in_lab_and_nothing_imports_a_script():
    top, lab, package = python_files("."), python_files("lab"), python_files("cascade_rms")
    assert {name for name, path in top.items() if is_script(path)} == USER_SCRIPTS
    assert set(top) - USER_SCRIPTS == {"model"}, "the top level holds model.py and the scripts a user runs"
    lab_scripts = {name for name, path in lab.items() if is_script(path)}
    assert set(lab) - lab_scripts == LAB_MODULES | {"__init__"}, "a lab file is an experiment, or in LAB_MODULES"
    assert {"bench", "stability", "variants", "estimates"} <= lab_scripts
    assert not [path for path in package.values() if is_script(path)], "cascade_rms/ holds modules, not scripts"
    scripts = USER_SCRIPTS | {f"lab.{name}" for name in lab_scripts}
    for path in [*top.values(), *lab.values(), *package.values()]:  # tests run scripts: they may import them
        imported = imports_of(path) & scripts
        assert not imported, f"{os.path.relpath(path, ROOT)} imports the script(s) {imported}: move what it shares to cascade_rms/"


def test_train_py_is_read_as_text_through_hyperparameters_alone():
    """bench, stability, the lab's runs, generate.py's defaults and the tests take train.py's
    values from its text: each through hyperparameters.defaults(), which reads the top-level
    train.py; only train.py itself reads its own block by path."""
    assert os.path.samefile(hyperparameters.TRAIN_SCRIPT, os.path.join(ROOT, "train.py"))
    assert hyperparameters.defaults()["epochs"] > 0
    files = [*glob.glob(os.path.join(ROOT, "*.py")), *glob.glob(os.path.join(ROOT, "lab", "*.py")),
             *glob.glob(os.path.join(ROOT, "tests", "*.py"))]
    readers = {os.path.relpath(p, ROOT) for p in files if calls(p, "of_script")}
    assert readers == {"train.py", "tests/test_hyperparameters.py"}, f"read train.py through hyperparameters.defaults(): {readers}"
    through_defaults = {os.path.relpath(p, ROOT) for p in files if calls(p, "defaults")}
    assert {"lab/bench.py", "lab/stability.py", "lab/runs.py", "generate.py", "tests/helpers.py"} <= through_defaults
