"""cascade_rms/data.py: the user's audio folders, bad files, the split, the pairs."""

import os

import torch

from helpers import sha1, train_here, write_collection


def test_a_mixed_folder_trains_and_names_exactly_the_bad_files(tmp_path, capsys):
    good, bad = write_collection(tmp_path / "music")
    before = {p: sha1(p) for p in good + bad}
    result = train_here(tmp_path / "ck", f"--data_dir={tmp_path / 'music'}", f"--cache_dir={tmp_path / 'cache'}", "--epochs=1",
                        capsys=capsys)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: skipping")]
    assert sorted(w.split(": ")[1].removeprefix("skipping ") for w in warnings) == sorted(bad), warnings
    assert "skipped 3 of 9 files" in result.stdout
    assert "train: 5 files" in result.stdout and "val: 1 files" in result.stdout and "step 1/" in result.stdout
    assert f"decoding {tmp_path / 'music'}" in result.stderr  # the cache build's progress bar
    assert {p: sha1(p) for p in good + bad} == before, "the user's files are only ever read"
    again = train_here(tmp_path / "ck2", f"--data_dir={tmp_path / 'music'}", f"--cache_dir={tmp_path / 'cache'}", "--epochs=1",
                       capsys=capsys)
    assert again.returncode == 0 and again.stdout.count("warning: skipping") == 3  # from the cache now


def test_a_folder_of_only_bad_files_fails_before_any_model(tmp_path, capsys):
    _, bad = write_collection(tmp_path / "music")
    for path in os.listdir(tmp_path / "music"):
        full = str(tmp_path / "music" / path)
        if full not in bad and os.path.isfile(full):
            os.remove(full)
    import shutil
    shutil.rmtree(tmp_path / "music" / "sub")
    result = train_here(tmp_path / "ck", f"--data_dir={tmp_path / 'music'}", f"--cache_dir={tmp_path / 'cache'}", capsys=capsys)
    assert result.returncode != 0
    assert f"no usable audio in {tmp_path / 'music'}" in result.stderr and "too short" in result.stderr
    assert "model:" not in result.stdout


def test_split_puts_no_file_on_both_sides():
    from cascade_rms import data
    tracks = [data.Track(f"file{i}", audio=torch.zeros(1000 * (i + 2)).numpy(), n_samples=1000 * (i + 2)) for i in range(20)]
    for seed in range(5):
        train_tracks, val_tracks = data.split_by_file(tracks, 0.2, seed)
        assert len(val_tracks) == 4 and len(train_tracks) == 16
        assert not {t.name for t in train_tracks} & {t.name for t in val_tracks}
        pairs = data.PairDataset(train_tracks, 500)
        assert {train_tracks[i].name for i, _ in pairs.pairs} <= {t.name for t in train_tracks}


def test_shuffle_targets_draws_from_another_file():
    from cascade_rms import data
    tracks = [data.Track(f"file{i}", audio=torch.full((4000,), float(i)).numpy(), n_samples=4000) for i in range(3)]
    pairs = data.PairDataset(tracks, 1000, shuffle_targets=True, seed=1)
    for index, (track, _) in enumerate(pairs.pairs):
        x, y = pairs[index]
        assert x[0].item() == track and y[0].item() != track


def test_bad_sample_values_are_caught_when_reading_and_silence_trains(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    from cascade_rms import data
    music = tmp_path / "music"
    music.mkdir()
    for i in range(4):
        sf.write(music / f"song{i}.wav", data.demo_piece(300 + i, 1.6, 8000), 8000)
    for i in range(2):
        sf.write(music / f"silence{i}.wav", np.zeros(12800, np.float32), 8000)
    poisoned = {"nan.wav": float("nan"), "inf.wav": float("inf"), "huge.wav": 100.0}
    for name, value in poisoned.items():
        audio = data.demo_piece(400, 1.6, 8000)
        audio[5000] = value
        sf.write(music / name, audio, 8000, subtype="FLOAT")
    result = train_here(tmp_path / "ck", f"--data_dir={music}", f"--cache_dir={tmp_path / 'cache'}", "--epochs=1",
                        "--recon_weight=0.05", capsys=capsys)
    assert result.returncode == 0, result.stderr
    for name, reason in (("nan.wav", "NaN or Inf"), ("inf.wav", "NaN or Inf"), ("huge.wav", "beyond")):
        assert any(line.startswith(f"warning: skipping {music / name}: ") and reason in line
                   for line in result.stdout.splitlines()), name
    assert "nan" not in " ".join(line for line in result.stdout.splitlines() if line.startswith("step ")).lower()
