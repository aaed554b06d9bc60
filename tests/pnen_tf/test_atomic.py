"""The package's one atomic writer: usual permissions, and what killed writers left is cleaned."""

import fcntl
import os
import time

import pytest

from pnen_tf import _atomic
from pnen_tf._atomic import remove_leftovers, staged_file, write_atomically


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _left_by_a_killed_run(path, folder=False):
    """A temporary file (or folder) as a writer killed before this test session left it."""
    if folder:
        path.mkdir()
        (path / "model.weights.h5").write_bytes(b"half")
    else:
        path.write_bytes(b"half")
    old = _atomic._STARTED - 3600
    os.utime(path, (old, old))
    return path


def test_files_get_the_usual_permissions_not_tempfiles_0600(tmp_path):
    write_atomically(tmp_path / "config.json", "{}")
    with staged_file(str(tmp_path / "model.keras"), suffix=".keras") as tmp:
        with open(tmp, "wb") as f:
            f.write(b"zip")
    for name in ("config.json", "model.keras"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.keras"]


def test_a_write_removes_what_killed_writers_left_in_its_folder(tmp_path):
    leftovers = [_left_by_a_killed_run(tmp_path / ".tmp-k3x_9abc.keras"),
                 _left_by_a_killed_run(tmp_path / ".tmp-ckpt-w0-ab12cd34", folder=True),
                 _left_by_a_killed_run(tmp_path / ".tmp-a1b2c3d4", folder=True)]
    kept = [_left_by_a_killed_run(tmp_path / ".old-zz99yy88", folder=True),  # a swapped-out version
            _left_by_a_killed_run(tmp_path / ".tmp-notes.txt"),  # not a name we make
            _left_by_a_killed_run(tmp_path / "x.png")]
    fresh = tmp_path / ".tmp-qqqqqqqq.png"  # begun after this process started: may be live
    fresh.write_bytes(b"")
    write_atomically(tmp_path / "result.json", "{}")
    assert not any(path.exists() for path in leftovers)
    assert all(path.exists() for path in kept + [fresh])


def test_a_temporary_file_locked_by_a_live_writer_is_left_alone(tmp_path):
    live = _left_by_a_killed_run(tmp_path / ".tmp-livewrit.keras")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what `staged_file` holds until its rename
        assert remove_leftovers(str(tmp_path)) == []
    finally:
        os.close(fd)
    assert remove_leftovers(str(tmp_path)) == [".tmp-livewrit.keras"]


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "best.keras"
    target.write_bytes(b"good")

    def fail_halfway(f):
        f.write(b"ha")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, fail_halfway)
    assert os.listdir(tmp_path) == ["best.keras"] and target.read_bytes() == b"good"


def test_the_staging_name_is_one_the_cleaner_recognises(tmp_path):
    with staged_file(str(tmp_path / "x.onnx"), suffix=".onnx") as tmp:
        assert _atomic._LEFTOVER.match(os.path.basename(tmp))
        old = time.time() - 3600
        os.utime(tmp, (old, old))
        assert remove_leftovers(str(tmp_path)) == []  # ours, live: locked
