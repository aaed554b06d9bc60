"""Staged writes: the target appears complete or not at all, and a replaced version survives failure."""

import os

import pytest

from export._atomic import staged_dir, staged_file


def test_staged_file_appears_only_on_success(tmp_path):
    target = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError):
        with staged_file(str(target), suffix=".onnx") as staging:
            with open(staging, "w") as file:
                file.write("half")
            raise RuntimeError("conversion failed")
    assert os.listdir(tmp_path) == []

    with staged_file(str(target), suffix=".onnx") as staging:
        with open(staging, "w") as file:
            file.write("whole")
    assert os.listdir(tmp_path) == ["model.onnx"] and target.read_text() == "whole"
    assert target.stat().st_mode & 0o777 == 0o644


def test_staged_dir_replaces_an_existing_version_only_when_complete(tmp_path):
    target = tmp_path / "pnen" / "1"
    target.mkdir(parents=True)
    (target / "saved_model.pb").write_text("old")

    with pytest.raises(RuntimeError):
        with staged_dir(str(target), replace=True) as staging:
            _write(staging, "half")
            raise RuntimeError("export failed")
    assert (target / "saved_model.pb").read_text() == "old"

    with staged_dir(str(target), replace=True) as staging:
        _write(staging, "new")
    assert (target / "saved_model.pb").read_text() == "new"
    assert os.listdir(tmp_path / "pnen") == ["1"]
    assert target.stat().st_mode & 0o777 == 0o755  # readable by a server running as another user


def test_failed_rename_puts_the_old_version_back(tmp_path, monkeypatch):
    target = tmp_path / "1"
    target.mkdir()
    (target / "saved_model.pb").write_text("old")

    def failing_rename(source, destination):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="rename failed"):
        with staged_dir(str(target), replace=True) as staging:
            _write(staging, "new")
    assert (target / "saved_model.pb").read_text() == "old"
    assert os.listdir(tmp_path) == ["1"]


def _write(directory, text):
    with open(os.path.join(directory, "saved_model.pb"), "w") as file:
        file.write(text)


def test_a_new_export_removes_what_a_killed_export_left(tmp_path):
    killed = tmp_path / "pnen" / ".tmp-x7_3kq9a"  # staging of an export killed mid-write
    killed.mkdir(parents=True)
    _write(str(killed), "half")
    swapped_out = tmp_path / "pnen" / ".old-4hd8_2mz"  # a version a killed --force swapped out
    swapped_out.mkdir()
    for path in (killed, swapped_out):
        os.utime(path, (0, 0))
    with staged_dir(str(tmp_path / "pnen" / "2")) as staging:
        _write(staging, "new")
    assert sorted(os.listdir(tmp_path / "pnen")) == [".old-4hd8_2mz", "2"]
