"""The one atomic writer of the package, the trainer and the exporters.

Everything is written beside its target under a temporary name and renamed into place once
complete and flushed, so a reader (a user, TF Serving polling a model folder) never sees a
half-written file or folder, and a crash never replaces a good file with a broken one.
Finished files get the usual permissions (0644 / 0755 under the common umask 022), not the
0600 / 0700 of `tempfile`.

A process killed while writing leaves its temporary file or folder behind. The next write
into that folder removes such leftovers: names as this module makes them, older than the
current process, and not locked — a writer holds an exclusive `flock` on its temporary file
or folder until the rename, so another process's write in progress is never touched.
"""

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import time

TEMPORARY_PREFIX = ".tmp-"
_REPLACED_PREFIX = ".old-"
# `tempfile`'s names: the prefix, eight characters of [a-z0-9_], the suffix. The middle part
# matches what older versions used for checkpoints (`.tmp-ckpt-w<worker>-`). A `.old-` folder
# is never removed: a writer killed mid-swap leaves the previous version there, to recover.
_LEFTOVER = re.compile(r"^\.tmp-(ckpt-w\d+-)?[a-z0-9_]{8}(\.[A-Za-z0-9]+)?$")
_STARTED = time.time()
# Reading the umask means setting it; done once, at import, before any thread of ours writes.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_cleaned = set()


def file_mode():
    """Permissions of a finished file: 0666 less the umask (0644 under the usual 022)."""
    return 0o666 & ~_UMASK


def folder_mode():
    """Permissions of a finished folder: 0777 less the umask (0755 under the usual 022)."""
    return 0o777 & ~_UMASK


def write_atomically(path, data):
    """Write `data` (bytes, str, or a function writing to a binary file: a large array need
    not exist twice in memory) to `path` atomically.

    The file's contents, then the rename, are flushed to the disk before returning: after a
    power loss `path` holds the old contents or the new, not a renamed empty file.
    """
    with staged_file(path, suffix=os.path.splitext(path)[1]) as tmp:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)


@contextlib.contextmanager
def staged_file(path, suffix=""):
    """Yield a temporary file path beside `path`; move it onto `path` if the block succeeds.

    The block may write the file by name (as `keras.Model.save` does); it is flushed to the
    disk, given the usual permissions and renamed over `path`. On failure nothing is left.
    """
    directory = _target_folder(path)
    fd, tmp = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=suffix, dir=directory)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a cleaner in another process leaves it alone
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
        _fsync(directory)
    finally:
        os.close(fd)
        if os.path.lexists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def staged_dir(path, replace=False):
    """Yield an empty temporary folder beside `path`; rename it to `path` on success.

    With `replace`, an existing `path` is swapped out only once the new one is complete, and
    put back if the rename fails. The temporary name starts with '.', which TF Serving
    ignores (it loads numeric names only).
    """
    parent = _target_folder(path)
    tmp = tempfile.mkdtemp(prefix=TEMPORARY_PREFIX, dir=parent)
    lock = os.open(tmp, os.O_RDONLY)
    old = None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield tmp
        os.chmod(tmp, folder_mode())
        if replace and os.path.exists(path):
            old = tempfile.mkdtemp(prefix=_REPLACED_PREFIX, dir=parent)
            os.replace(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            if old is not None:  # put the previous version back rather than lose it
                os.replace(old, path)
                old = None
            raise
        _fsync(parent)
    finally:
        os.close(lock)
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def remove_leftovers(folder):
    """Remove the temporary files and folders that killed writers left in `folder`.

    Only names this module makes, modified before this process started and locked by no
    live writer. Best effort: what cannot be removed stays. Returns the names removed.
    """
    removed = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if _LEFTOVER.match(name) and not os.path.islink(path) and _remove_if_abandoned(path):
            removed.append(name)
    return removed


def _remove_if_abandoned(path):
    try:
        if os.stat(path).st_mtime >= _STARTED:  # may be a write that began after our start
            return False
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
        return True
    except OSError:  # locked by a live writer, or not ours to remove
        return False
    finally:
        os.close(fd)


def _target_folder(path):
    """The folder `path` goes into: created if needed, cleaned of leftovers once per process."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if folder not in _cleaned:
        _cleaned.add(folder)
        remove_leftovers(folder)
    return folder


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
