"""Every file the package writes goes through one helper: readers see the old file or the new one, never half."""

from __future__ import annotations

import pytest

from aebnas.atomic_write import atomic_path, write_csv_atomic, write_text_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".json" and tmp != target
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_writes_create_the_folder_and_keep_the_name_when_asked(tmp_path):
    write_csv_atomic(tmp_path / "a" / "rows.csv", [{"x": 1, "y": 2}, {"x": 3, "y": 4}])
    assert (tmp_path / "a" / "rows.csv").read_text().splitlines() == ["x,y", "1,2", "3,4"]
    with atomic_path(tmp_path / "model.pt2", keep_name=True) as tmp:
        assert tmp.name == "model.pt2" and tmp.parent != tmp_path
        tmp.write_bytes(b"graph")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "model.pt2"]
