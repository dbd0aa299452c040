"""The layout: scripts share code through modules only."""

import os

from helpers import ROOT


def test_no_script_imports_another_script():
    """Scripts (files that run as __main__) share code through modules only."""
    import ast
    import glob
    files = {os.path.basename(p)[:-3]: p for p in glob.glob(os.path.join(ROOT, "*.py")) if not p.endswith("test_model.py")}
    scripts = {name for name, path in files.items() if '__name__ == "__main__"' in open(path).read()}
    assert {"train", "generate", "evaluate", "experiments", "bench", "stability", "plot"} <= scripts
    for name in files:
        tree = ast.parse(open(files[name]).read())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & (scripts - {name}), f"{name}.py imports the script(s) {imported & scripts}"
