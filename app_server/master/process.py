"""The master's process plumbing: the signal inbox, forking, reaping, killing.

Owns: ``SignalInbox`` (handlers only append the signal number; a
self-pipe registered on the loop's selector wakes it, ``signal.set_wakeup_fd``),
``fork_child`` (flush, fork, run the child's function, ``os._exit`` with its
code whatever happens), ``reap`` (every exited child: pid, exit code, CPU
seconds from ``wait4``) and ``kill``.

Rule: imports nothing from the package.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import sys
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from types import FrameType

SIGNALS = (
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGCHLD,
)


class SignalInbox:
    """Signals as a queue the loop drains; the handlers do nothing else."""

    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self.read_fd = self.write_fd = -1

    def install(self, selector: selectors.BaseSelector) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        selector.register(self.read_fd, selectors.EVENT_READ, self)
        signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        for sig in SIGNALS:
            signal.signal(sig, self._record)
            if sig != signal.SIGCHLD:
                signal.siginterrupt(sig, False)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.pending.append(signum)

    def drain_wakeups(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self.read_fd, 512):
                pass

    def restore(self) -> None:
        """Default dispositions again (at exit, and in a forked child)."""
        signal.set_wakeup_fd(-1)
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.read_fd = self.write_fd = -1


def fork_child(child: Callable[[], int]) -> int:
    """Fork; the child runs ``child()`` and exits with its code. Returns the pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        code = child()
    except BaseException:  # noqa: BLE001 - whatever happens, the child must exit here
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def reap() -> Iterator[tuple[int, int, float]]:
    """Every child that exited: (pid, exit code or -signal, CPU seconds it used)."""
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if pid == 0:
            return
        yield pid, os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime


def kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
