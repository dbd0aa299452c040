"""The layout: the top level holds the network, the loop and the scripts a user runs; lib/ holds
the modules they share, and nothing imports a script."""

import ast
import glob
import os

from helpers import ROOT


def imports_of(path):
    tree = ast.parse(open(path).read())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {f"lib.{alias.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 and node.module in ("lib", None) for alias in node.names}
    return imported


def test_scripts_are_at_the_top_and_share_code_through_lib_only():
    top = {os.path.basename(p)[:-3]: p for p in glob.glob(os.path.join(ROOT, "*.py"))}
    scripts = {name for name, path in top.items() if '__name__ == "__main__"' in open(path).read()}
    assert scripts == {"train", "generate", "evaluate", "plot", "bench", "stability", "experiments", "test_model"}
    assert set(top) - scripts == {"model"}, "the top level holds model.py and the scripts; a shared module goes in lib/"
    library = glob.glob(os.path.join(ROOT, "lib", "*.py"))
    for path in library:
        assert '__name__ == "__main__"' not in open(path).read(), f"{path} is a script: move it to the top level"
    for path in list(top.values()) + library:
        imported = {name.split(".")[0] for name in imports_of(path)} | {name for name in imports_of(path)}
        assert not imported & scripts, f"{os.path.relpath(path, ROOT)} imports the script(s) {imported & scripts}"
