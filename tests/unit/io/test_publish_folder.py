"""publish_folder: the final folder is the old one or the new one, never a mix; leftovers of a
dead writer are removed by the next run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sparsify.errors import OutputError
from sparsify.io.publish import publish_folder, remove_stale_staging, stage_folder


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_new_folder_replaces_the_old_one_whole(tmp_path):
    final = tmp_path / "model"
    (final / "1").mkdir(parents=True)
    (final / "1" / "old.onnx").write_text("old")
    staged = stage_folder(final)
    (staged / "2").mkdir()
    (staged / "2" / "model.onnx").write_text("new")
    publish_folder(staged, final)
    assert _tree(final) == ["2", "2/model.onnx"]
    assert sorted(os.listdir(tmp_path)) == ["model"]  # nothing staged or set aside is left


def test_a_failed_publication_keeps_the_old_folder(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "keep.txt").write_text("old")
    staged = stage_folder(final)
    staged.rmdir()  # the rename of the new folder will fail
    with pytest.raises(OutputError, match="cannot publish"):
        publish_folder(staged, final)
    assert _tree(final) == ["keep.txt"] and sorted(os.listdir(tmp_path)) == ["model"]


def test_a_dead_writers_staging_folder_is_removed(tmp_path):
    code = ("import sys, pathlib; from sparsify.io.publish import stage_folder; "
            "p = stage_folder(pathlib.Path(sys.argv[1]) / 'model'); (p / 'x').write_text('partial'); print(p)")
    staged = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert os.path.isdir(staged)
    mine = stage_folder(tmp_path / "other")  # a live writer's folder stays
    assert [str(p) for p in remove_stale_staging(tmp_path)] == [staged]
    assert not os.path.exists(staged) and mine.is_dir()
