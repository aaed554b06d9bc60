"""Where a run writes, checked before any work starts: `restore`, `evaluate` and the client.

A run that takes hours must not find out at its end that its output folder is a file, or
that its results would replace its own inputs. These checks are cheap and come first, each
failing with one line that names the path.
"""

import contextlib
import itertools
import os
import tempfile

from pnen_tf._atomic import TEMPORARY_PREFIX


class OutputError(ValueError):
    """An output location that cannot or must not be written; the message names it."""


def refuse_overwriting_inputs(outputs, inputs):
    """Raise `OutputError` if any of `outputs` is one of `inputs` (the same file, by resolved
    path or, for existing files, by device and inode: links and case-insensitive names too)."""
    real_inputs, inodes = {}, {}
    for path in inputs:
        real_inputs[os.path.realpath(path)] = path
        if os.path.exists(path):
            inodes[_inode(path)] = path
    for output in outputs:
        source = real_inputs.get(os.path.realpath(output))
        if source is None and os.path.exists(output):
            source = inodes.get(_inode(output))
        if source is not None:
            raise OutputError(f"{output}: would overwrite the input {source}; "
                              "write the results to another folder")


def _inode(path):
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def check_writable_folder(folder):
    """Create `folder` if needed and make sure a file can be written in it, or `OutputError`."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputError(f"{folder}: exists and is not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as error:
        raise OutputError(f"{folder}: cannot write here ({error.strerror or error})") from None


@contextlib.contextmanager
def output_folder(folder):
    """Check (`check_writable_folder`) the folder a run writes into, for the run's duration.

    A folder this run created is removed again if the run leaves it empty: a run refused or
    interrupted before its first result leaves nothing behind.
    """
    created = not os.path.isdir(folder)
    check_writable_folder(folder)
    try:
        yield folder
    finally:
        if created:
            with contextlib.suppress(OSError):  # not empty: it holds results
                os.rmdir(folder)


def output_file_folder(path):
    """`output_folder` for the folder of the file `path`; `OutputError` if `path` is a folder."""
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a folder; give the name of the file to write")
    return output_folder(os.path.dirname(os.path.abspath(path)))


def name_preferences(path):
    """Output names to try for an input file, best first: `x.jpg` -> ['x', 'x_jpg']."""
    stem, ext = os.path.splitext(os.path.basename(os.path.normpath(path)))
    return [stem, f"{stem}_{ext.lstrip('.')}"] if ext else [stem]


def unique_names(preferences, suffixes=("",)):
    """One name per item, none used twice in a run.

    `preferences` holds, per item, the names to try in order (`name_preferences`); when all
    are taken, the last is numbered (`x_jpg_2`, ...). Every name is reserved with each of
    `suffixes` appended (`x` and `x_compare`), and names are compared ignoring case, as
    some file systems do.
    """
    used, names = set(), []
    for preferred in preferences:
        tries = itertools.chain(preferred, (f"{preferred[-1]}_{n}" for n in itertools.count(2)))
        name = next(t for t in tries if not {(t + s).lower() for s in suffixes} & used)
        used.update((name + s).lower() for s in suffixes)
        names.append(name)
    return names
