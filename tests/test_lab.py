"""lab/: the thresholds table and the variants' refusals, the pieces of the issue-31 work (the
semitone spectrum a learned grain description reads, and what a chunk's levels mean), the
tuning and shared-sample checks of SoundFont renderers, more transcription and refinement steps,
and how a lab script refuses a checkpoint that is not there."""

import numpy as np
import pytest
import torch

from helpers import in_process


def test_thresholds_prints_every_reference_and_variants_rejects_unknown_names(capsys):
    result = in_process("lab.thresholds", ["--pairs=4"], capsys)
    assert result.returncode == 0, result.stderr
    verdicts = {line[:32].strip(): line.rsplit("  ", 1)[-1] for line in result.stdout.splitlines() if line.endswith("unrelated")}
    assert verdicts["copy of input"] == verdicts["50/50 mix"] == "0 blend, 4 copy, 0 hiss, 0 unrelated"
    assert verdicts["white noise"] == verdicts["noise, target spectrum+envelope"] == "0 blend, 0 copy, 4 hiss, 0 unrelated"
    assert {"random grains", "Let it Bee", "another file"} <= set(verdicts)
    result = in_process("lab.variants", ["--names=ours,bogus"], capsys)
    assert result.returncode != 0 and "unknown variants bogus" in result.stderr


def test_a_grains_semitone_levels_name_its_notes_whatever_their_loudness():
    """A sine lands on its own MIDI note, an octave apart stays apart (which chroma folds
    together), and the learned description ignores loudness: it is computed on levels with their
    mean removed, so a grain 20 dB louder is described the same."""
    from lab import learned_choice

    rate, n = 16000, 2048
    semitones = learned_choice.semitone_filter(rate, n, lowest=28, highest=100)
    t = np.arange(n) / rate
    for note in (45, 57, 69, 81):
        sine = torch.from_numpy(np.sin(2 * np.pi * 440 * 2 ** ((note - 69) / 12) * t)).float() * torch.hann_window(n)
        levels = torch.fft.rfft(sine).abs().pow(2) @ semitones.T
        assert 28 + int(levels.argmax()) == note
    encoder = learned_choice.GrainEncoder(len(semitones))
    levels = torch.randn(3, len(semitones))
    assert torch.allclose(encoder.distance(levels, levels + 2.0).diagonal(), torch.zeros(3), atol=1e-4)
    assert encoder.distance(levels[:1], levels[1:]).min() > 1e-3


def test_chunk_means_average_each_chunks_own_frames():
    from lab import truth_needed

    levels = torch.arange(10.0).view(1, 10, 1).expand(1, 10, 2)
    means = truth_needed.chunk_means(levels, 4)  # chunks of frames 0-3, 4-7 and 8-9
    assert torch.equal(means, torch.tensor([[1.5, 1.5], [5.5, 5.5], [8.5, 8.5]]))


def test_a_note_in_tune_has_its_strongest_partial_on_a_harmonic_and_one_out_of_tune_does_not():
    from lab import tuning
    rate, key = 16000, 60
    t = np.arange(rate) / rate
    f0 = 440 * 2 ** ((key - 69) / 12)
    tone = sum(a * np.sin(2 * np.pi * n * f0 * t) for n, a in ((1, 0.5), (2, 1.0), (3, 0.3)))  # strongest: the 2nd
    assert tuning.strongest_partial_cents(tone, key, rate) < 5
    sharp = sum(a * np.sin(2 * np.pi * n * f0 * 2 ** (20 / 12) * t) for n, a in ((1, 1.0), (2, 0.5)))  # symusic's piano
    assert tuning.strongest_partial_cents(sharp, key, rate) > 30  # the criterion of lab.tuning
    assert tuning.strongest_partial_cents(np.zeros(rate), key, rate) == np.inf


def test_shared_samples_finds_every_program_of_a_soundfont_shared_with_itself(capsys):
    from cascade_rms import soundfont
    from lab import shared_samples
    shared_samples.shared_samples(soundfont.default_soundfont(), soundfont.default_soundfont())
    assert "the same samples on 112 of 112 melodic programs" in capsys.readouterr().out


def test_transcribe_more_trains_a_checkpoints_stage_1_and_reports_held_out_and_organ_f1(tiny_scores_run, capsys):
    from cascade_rms import checkpointing
    from lab import transcribe_more
    path = checkpointing.files(tiny_scores_run)[0]
    before = {k: v.clone() for k, v in checkpointing.load(path)["model"].items()}
    transcribe_more.transcribe_more(path, steps=2, tilt_db=1.0, bell_db=3.0, organs=3)
    out = capsys.readouterr().out
    assert "+ 2 steps of 16, lr 1e-03 (tilt 1.0 dB, bells 3.0 dB, organs 3x): held-out pooled F1" in out
    assert all(f"{p}: " in out for p in [42, 73, *transcribe_more.ORGANS])
    after = checkpointing.load(path)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)  # the checkpoint itself is only read


def test_transcribe_more_fresh_trains_initial_weights_not_the_checkpoints(tiny_scores_run, capsys, monkeypatch):
    """--fresh trains the checkpoint's model from the weights train.py's seed gives it, not from
    the checkpoint's: after one step at a tiny lr, stage 1's note head is not the trained one."""
    from cascade_rms import checkpointing
    from lab import transcribe_more
    path = checkpointing.files(tiny_scores_run)[0]
    trained = checkpointing.load(path)["model"]
    seen = []

    def counts(model, codec, renderer, scores, programs, segment):  # what was trained, without the evaluation's cost
        seen.append(model.state_dict())
        return {program: np.ones(3, dtype=int) for program in programs}

    monkeypatch.setattr(transcribe_more.notes, "transcription_counts", counts)
    transcribe_more.transcribe_more(path, steps=1, tilt_db=1.0, bell_db=3.0, lr=1e-9, batch=2, fresh=True)
    assert "(initial weights) + 1 steps of 2, lr 1e-09" in capsys.readouterr().out
    assert not torch.allclose(seen[0]["stage1.notes.weight"], trained["stage1.notes.weight"])


def test_refine_more_trains_stage_2_seeing_let_it_bee_and_leaves_the_checkpoint_alone(tiny_scores_run, capsys):
    from cascade_rms import checkpointing
    from lab import refine_more
    path = checkpointing.files(tiny_scores_run)[0]
    before = {k: v.clone() for k, v in checkpointing.load(path)["model"].items()}
    refine_more.refine_more(path, steps=2, batch_size=2, n_triplets=1, sees_bee=True, epoch_triplets=0)
    out = capsys.readouterr().out
    assert "+ 2 steps of 2, lr 2e-03, refining the fit, seeing fit, input, notes and Let it Bee: on 1 held-out triplets" in out
    assert "played LSD" in out and "(Let it Bee" in out
    after = checkpointing.load(path)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_refine_more_from_bee_refines_let_it_bee_not_the_fit(tiny_scores_run, capsys):
    """With no step the refinement is the checkpoint's; the estimate it moves is the fit, or with
    from_bee Let it Bee's output, so the two estimates' distances to the truth differ."""
    import re
    from cascade_rms import checkpointing
    from lab import refine_more
    path = checkpointing.files(tiny_scores_run)[0]
    distances = []
    for from_bee in (False, True):
        refine_more.refine_more(path, steps=0, n_triplets=1, sees_bee=True, from_bee=from_bee, epoch_triplets=0)
        out = capsys.readouterr().out
        assert ("refining Let it Bee" if from_bee else "refining the fit") in out
        distances.append(float(re.search(r"estimate (-?[\d.]+) dB from the truth", out).group(1)))
    assert distances[0] != distances[1]


@pytest.mark.parametrize("name", ["refine_more", "estimates", "transcribe_more"])
def test_a_lab_script_given_no_checkpoint_exits_naming_the_file(name, tmp_path):
    import importlib
    missing = str(tmp_path / "missing.pth")
    with pytest.raises(SystemExit) as exit:
        importlib.import_module(f"lab.{name}").main([missing])
    assert str(exit.value) == f"{missing}: no such file"
