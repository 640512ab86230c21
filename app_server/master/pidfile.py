"""The pid file: written atomically at start, removed at exit if still ours.

Rule: imports nothing from the package.
"""

from __future__ import annotations

import errno
import logging
import os

log = logging.getLogger("app_server.error")


def write_pid_file(path: str) -> None:
    """Atomically: a reader sees the old content or the whole new pid, never half."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        handle.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove_pid_file(path: str) -> None:
    """Remove the pid file if it is still ours."""
    try:
        with open(path) as handle:
            if handle.read().strip() != str(os.getpid()):
                return
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("cannot remove pid file %s: %s", path, exc)
