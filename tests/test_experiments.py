"""experiments.py: the thresholds table and its refusals."""

from helpers import in_process


def test_experiments_thresholds_prints_every_reference_and_rejects_unknown_variants(capsys):
    result = in_process("experiments", ["--thresholds", "--pairs=4"], capsys)
    assert result.returncode == 0, result.stderr
    verdicts = {line[:32].strip(): line.rsplit("  ", 1)[-1] for line in result.stdout.splitlines() if line.endswith("unrelated")}
    assert verdicts["copy of input"] == verdicts["50/50 mix"] == "0 blend, 4 copy, 0 hiss, 0 unrelated"
    assert verdicts["white noise"] == verdicts["noise, target spectrum+envelope"] == "0 blend, 0 copy, 4 hiss, 0 unrelated"
    assert {"random grains", "Let it Bee", "another file"} <= set(verdicts)
    result = in_process("experiments", ["--variants=ours,bogus"], capsys)
    assert result.returncode != 0 and "unknown variants bogus" in result.stderr
