"""What every `export` command line shares: user errors end in one clear line, not a traceback."""

import sys

# A missing or existing path, an unreachable server (OSError) and a bad value (ValueError)
# are the user's to fix; anything else is a bug and keeps its traceback.
USER_ERRORS = (OSError, ValueError)


def run(parser, action, argv):
    """Parse `argv` with `parser`, call `action(args)`, and return the exit status."""
    args = parser.parse_args(argv)
    try:
        action(args)
    except USER_ERRORS as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    return 0
