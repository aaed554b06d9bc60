"""Write beside the target, then rename into place: a failed export leaves nothing behind.

A rename within one directory is atomic, so TF Serving (which polls the model directory) or a
user never sees a half-written version directory or ONNX file.
"""

import contextlib
import os
import shutil
import tempfile

_READABLE_DIR = 0o755  # mkdtemp makes 0700; a serving container running as another user must read it
_READABLE_FILE = 0o644


@contextlib.contextmanager
def staged_file(path, suffix=""):
    """Yield a temporary file path beside `path`; move it onto `path` if the block succeeds."""
    directory = _parent(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _READABLE_FILE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def staged_dir(path, replace=False):
    """Yield an empty temporary directory beside `path`; rename it to `path` on success.

    With `replace`, an existing `path` is swapped out only once the new one is complete.
    The temporary name starts with '.', which TF Serving ignores (it loads numeric names only).
    """
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=_parent(path))
    old = None
    try:
        yield tmp
        os.chmod(tmp, _READABLE_DIR)
        if replace and os.path.exists(path):
            old = tempfile.mkdtemp(prefix=".old-", dir=_parent(path))
            os.replace(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            if old is not None:  # put the previous version back rather than lose it
                os.replace(old, path)
                old = None
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _parent(path):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    return directory
