"""cascade_rms/atomic.py: a file or folder appears whole or not at all."""

import os

import pytest

from cascade_rms import atomic


def test_a_failed_write_leaves_the_old_file_and_no_partial_one_and_a_finished_one_replaces_it(tmp_path):
    path = tmp_path / "song.flac"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic.written(path) as partial, open(partial, "wb") as f:
            f.write(b"half a ne")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["song.flac"]
    with atomic.written(path, suffix=".mid") as partial:
        assert partial.endswith(".mid") and atomic.PARTIAL in os.path.basename(partial)
        assert os.path.dirname(partial) == str(tmp_path)  # beside it: the rename stays on one file system
        with open(partial, "wb") as f:
            f.write(b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["song.flac"]


def test_a_folder_appears_with_all_its_files_or_not_at_all(tmp_path):
    songs = tmp_path / "songs"
    with pytest.raises(KeyboardInterrupt):
        with atomic.written(songs) as partial:
            os.makedirs(partial)
            (tmp_path / os.path.basename(partial) / "a.ogg").write_bytes(b"a")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
    with atomic.written(songs) as partial:
        os.makedirs(partial)
        for name in ("a.ogg", "b.ogg"):
            with open(os.path.join(partial, name), "wb") as f:
                f.write(name.encode())
    assert sorted(os.listdir(songs)) == ["a.ogg", "b.ogg"] and os.listdir(tmp_path) == ["songs"]
