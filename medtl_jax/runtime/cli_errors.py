"""User errors at the command line: one `error: ...` line on stderr and exit code 2, no traceback.

    from medtl_jax.runtime.cli_errors import user_errors

    def main(argv):
        with user_errors(debug=_DEBUG.value):
            ...

A bad input (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, or an
OSError for a full or read-only disk) prints its message on one line, then the hint below, and exits 2.
Anything else (a bug) keeps its traceback. `--debug` or MEDTL_DEBUG=1 shows the traceback of user
errors too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import Iterator

DEBUG_ENV = "MEDTL_DEBUG"
EXIT_CODE = 2
HINT = f"(set {DEBUG_ENV}=1 or pass --debug for the traceback)"
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
DISK_ERRNOS = (errno.ENOSPC, errno.EROFS)


def debug_requested(debug: bool = False) -> bool:
    """`debug`, or $MEDTL_DEBUG set to anything but '', '0', 'false' or 'no'."""
    return debug or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def is_user_error(err: BaseException) -> bool:
    """Whether `err` reports a bad input or an unusable disk (not a bug)."""
    return isinstance(err, USER_ERRORS) or (isinstance(err, OSError) and err.errno in DISK_ERRNOS)


def one_line(err: BaseException) -> str:
    """The message of `err` on one line (its lines joined by '; '); the type's name if it has none."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines) or type(err).__name__


@contextlib.contextmanager
def user_errors(debug: bool = False) -> Iterator[None]:
    """Turns a user error raised inside into `error: <message> <HINT>` on stderr and `sys.exit(2)`;
    re-raises it unchanged when `debug_requested(debug)`, and anything that is not a user error."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - filtered by is_user_error
        if debug_requested(debug) or not is_user_error(err):
            raise
        print(f"error: {one_line(err)} {HINT}", file=sys.stderr)
        sys.exit(EXIT_CODE)
