"""zhijian/files.py: a file or folder is replaced whole, or not at all."""

import pytest

from zhijian.files import staged, write_atomic


def test_a_write_that_fails_leaves_the_old_file_and_no_staging(tmp_path):
    path = write_atomic(tmp_path / "results.json", "old")
    with pytest.raises(RuntimeError), staged(path) as staging:
        staging.write_text("half of the ne", encoding="utf-8")
        raise RuntimeError("killed")
    assert path.read_text(encoding="utf-8") == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_staged_folder_replaces_the_old_one_whole(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "old.txt").write_text("old")
    (tmp_path / ".model.tmp").mkdir()  # left by a crash: cleared, not mixed in
    (tmp_path / ".model.tmp" / "stale.txt").write_text("stale")
    with staged(folder) as staging:
        staging.mkdir()
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in folder.iterdir()) == ["new.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
