"""plot.py: the health figure and the spectrograms."""

import os

import pytest

from helpers import clone_run, in_process, png_size
from cascade_rms import checkpointing


def test_plot_writes_the_health_figure_and_spectrograms(tmp_path, capsys, two_epoch_run):
    import plot
    clone_run(two_epoch_run[0], tmp_path)
    result = in_process("plot", [str(tmp_path)], capsys)
    assert result.returncode == 0, result.stderr
    w, h = plot.FIGURE_INCHES
    assert png_size(tmp_path / "run_health.png") == (w * plot.DPI, h * plot.DPI)
    w, h = plot.SPECTROGRAM_INCHES
    assert png_size(tmp_path / "spectrograms_epoch_2.png") == (w * plot.DPI, h * plot.DPI)
    assert os.path.getsize(tmp_path / "run_health.png") > 20_000  # four panels of lines, not a blank canvas


def test_plot_explains_a_missing_or_empty_metrics_file(tmp_path):
    import plot
    with pytest.raises(SystemExit, match="no metrics file"):
        plot.read_metrics(str(tmp_path))
    (tmp_path / "metrics.csv").write_text(",".join(checkpointing.MetricsFile.COLUMNS) + "\n")
    with pytest.raises(SystemExit, match="has no rows yet"):
        plot.read_metrics(str(tmp_path))
