"""Every test: `python test_model.py` runs tests/ (one file per module) and closes with
`N passed, N failed, N skipped`. Arguments pass through to pytest, e.g. `-k generate` or
`tests/test_data.py`."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.abspath(__file__))


class ClosingLine:
    def pytest_terminal_summary(self, terminalreporter):
        stats = terminalreporter.stats
        self.counts = [len(stats.get(k, [])) for k in ("passed", "failed", "error", "skipped")]


if __name__ == "__main__":
    os.chdir(ROOT)
    closing = ClosingLine()
    code = pytest.main(["-q", *(sys.argv[1:] or ["tests"])], plugins=[closing])
    passed, failed, errors, skipped = getattr(closing, "counts", [0, 0, 0, 0])
    print(f"{passed} passed, {failed + errors} failed, {skipped} skipped")
    sys.exit(code)
