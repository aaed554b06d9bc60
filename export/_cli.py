"""What the `export` commands share, following `pnen_tf.apps.cli`'s convention.

Each command module exposes `add_arguments(parser)`, `run(args) -> int` and `main(argv=None)`
(for `python -m export.X`); `pnen-tf` calls the first two. User errors end in one
`error: ...` line and exit status 1, not a traceback.
"""

import argparse
import functools
import sys

# A missing or existing path, an unreachable server (OSError) and a bad value (ValueError)
# are the user's to fix; anything else is a bug and keeps its traceback.
USER_ERRORS = (OSError, ValueError)


def reports_user_errors(action):
    """Wrap `action(args)` into a `run(args)` that returns 0, or 1 after printing a user error."""

    @functools.wraps(action)
    def run(args):
        try:
            action(args)
        except USER_ERRORS as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        return 0

    return run


def main(prog, description, add_arguments, run, argv):
    """`python -m` entry point: parse `argv` with the command's arguments, then `run`."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    return run(parser.parse_args(argv))
