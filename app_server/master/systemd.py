"""systemd integration in plain Python: the notify protocol and socket activation.

Owns: ``Notifier`` (sd_notify(3) over the ``NOTIFY_SOCKET`` datagram socket:
READY, RELOADING with MONOTONIC_USEC, STOPPING, STATUS, WATCHDOG),
``watchdog_interval`` (how often the master must send WATCHDOG=1) and
``listen_fds`` (the sockets systemd passes with ``LISTEN_FDS``, sd_listen_fds(3)).
No libsystemd: the protocol is one datagram of ``KEY=VALUE`` lines.

Each reader removes the variables it consumed from the mapping it is given, so
that workers, the application and anything they run never inherit them: a
process started later that sent READY=1 or adopted fd 3 as its own would
confuse systemd or take the listeners. The master passes ``os.environ`` once,
at start-up, before it forks.

The sockets from ``listen_fds`` are shared with systemd, which keeps its own
copies open to hand them to the next start of the service. The server must
never ``shutdown()`` them: shutdown acts on the socket itself, not on this
process's descriptor, so it would break the listener for systemd and for every
later start. The server only ``close()``s its own copy.

Rule: imports nothing from the package.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import MutableMapping

log = logging.getLogger("app_server.error")

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"
LISTEN_PID = "LISTEN_PID"
LISTEN_FDS = "LISTEN_FDS"
LISTEN_FDNAMES = "LISTEN_FDNAMES"
SD_LISTEN_FDS_START = 3  # the first passed descriptor; 0-2 stay stdio
UNNAMED_FD = "unknown"  # what sd_listen_fds_with_names(3) reports for a nameless fd


class SystemdError(Exception):
    """systemd passed something the server cannot use; ``str()`` is the line to show."""

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(subject, reason)
        self.subject = subject
        self.reason = reason

    def __str__(self) -> str:
        return f"systemd socket activation: {self.subject} {self.reason}"


class Notifier:
    """Sends notify messages to the service manager; ``send`` never raises.

    The socket is non-blocking so that a busy or wedged PID 1 can never stall
    the master's loop: a message that cannot be queued at once is dropped and
    reported as a failure. A forked worker inherits the descriptor (close-on-
    exec covers exec only) and should ``close()`` its copy; with
    ``NotifyAccess=main`` systemd ignores anything a worker sends anyway.
    """

    def __init__(self, sock: socket.socket, address: str) -> None:
        self._sock = sock
        self._address = address
        self._warned = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str]) -> Notifier | None:
        """A notifier for ``NOTIFY_SOCKET``, or None when systemd did not ask for one.

        ``NOTIFY_SOCKET`` is removed from ``environ`` in every case. It names a
        socket file (``/run/systemd/notify``) or, with a leading ``@``, a Linux
        abstract socket.
        """
        value = environ.pop(NOTIFY_SOCKET, "")
        if not value:
            return None
        if value[0] not in "/@":
            log.warning(
                "NOTIFY_SOCKET=%r is neither an absolute path nor an @abstract name; "
                "systemd notifications are off",
                value,
            )
            return None
        address = "\0" + value[1:] if value[0] == "@" else value
        # Python creates sockets with SOCK_CLOEXEC (PEP 446), so an exec'd
        # program does not inherit this descriptor.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        return cls(sock, address)

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments as one datagram; True if it was queued."""
        if not assignments:
            return True
        message = "\n".join(assignments).encode("utf-8", "replace")
        try:
            self._sock.sendto(message, self._address)
        except OSError as exc:
            self._warn_once(exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *_status_line(status))

    def reloading(self, status: str | None = None) -> bool:
        # MONOTONIC_USEC lets systemd (253+, Type=notify-reload) match this
        # message to the reload it asked for, so a late message from an
        # earlier reload is not mistaken for the current one.
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={now_usec}", *_status_line(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *_status_line(status))

    def status(self, text: str) -> bool:
        """Set the line ``systemctl status`` shows as "Status:"."""
        return self.send(*_status_line(text))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        """Close the socket (idempotent); later sends return False."""
        self._sock.close()

    def _warn_once(self, exc: OSError) -> None:
        if self._warned:
            return
        self._warned = True
        where = "@" + self._address[1:] if self._address.startswith("\0") else self._address
        log.warning(
            "cannot notify systemd at %s: %s (further failures are not logged)",
            where,
            exc.strerror or exc,
        )


def _status_line(text: str | None) -> tuple[str, ...]:
    """``STATUS=text`` on one line: a newline would start a new assignment."""
    if text is None:
        return ()
    return ("STATUS=" + " ".join(text.splitlines()),)


def watchdog_interval(environ: MutableMapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 messages (half of ``WATCHDOG_USEC``), or None.

    None when the watchdog is off, or when ``WATCHDOG_PID`` names another
    process (``pid``, by default this one). ``WATCHDOG_USEC`` and
    ``WATCHDOG_PID`` are removed from ``environ`` in every case.
    """
    usec = environ.pop(WATCHDOG_USEC, "")
    owner = environ.pop(WATCHDOG_PID, "")
    if not usec:
        return None
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    try:
        interval_usec = int(usec)
    except ValueError:
        interval_usec = 0
    if interval_usec <= 0:
        log.warning("WATCHDOG_USEC=%r is not a positive integer; the watchdog is off", usec)
        return None
    # Half the interval, as sd_watchdog_enabled(3) advises: one late or lost
    # message must not be enough for systemd to kill the service.
    return interval_usec / 2 / 1_000_000


def listen_fds(environ: MutableMapping[str, str], pid: int) -> list[tuple[socket.socket, str]]:
    """The listening sockets systemd passed to process ``pid``, with their names.

    Empty unless ``LISTEN_PID`` equals ``pid`` and ``LISTEN_FDS`` is set. The
    sockets are descriptors 3 .. 3+N-1, named by ``LISTEN_FDNAMES`` (a name
    missing there is ``"unknown"``); each is returned non-blocking and
    close-on-exec. ``LISTEN_PID``, ``LISTEN_FDS`` and ``LISTEN_FDNAMES`` are
    removed from ``environ`` in every case.

    Raises ``SystemdError`` when a variable is malformed or a descriptor is not
    a listening stream socket; the descriptors are then left as they were.
    The caller must never ``shutdown()`` the sockets (see the module docstring).
    """
    owner = environ.pop(LISTEN_PID, "")
    count = environ.pop(LISTEN_FDS, "")
    names = environ.pop(LISTEN_FDNAMES, "")
    if not owner or not count or _parse_count(LISTEN_PID, owner) != pid:
        return []
    named = _name_fds(_parse_count(LISTEN_FDS, count), names)
    sockets: list[socket.socket] = []
    try:
        for fd, name in named:
            sockets.append(_adopt(fd, name))
    except SystemdError:
        for sock in sockets:
            sock.detach()  # leave the descriptor open, as systemd passed it
        raise
    for sock in sockets:
        sock.setblocking(False)
        sock.set_inheritable(False)
    return [(sock, name) for sock, (_, name) in zip(sockets, named, strict=True)]


def _parse_count(variable: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise SystemdError(f"{variable}={value!r}", "is not a non-negative integer")
    return number


def _name_fds(count: int, names: str) -> list[tuple[int, str]]:
    given = names.split(":") if names else []
    given += [""] * (count - len(given))
    return [(SD_LISTEN_FDS_START + i, given[i] or UNNAMED_FD) for i in range(count)]


def _adopt(fd: int, name: str) -> socket.socket:
    """Wrap ``fd``; family and type are read from the descriptor itself."""
    subject = f"file descriptor {fd} (name {name!r})"
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        if exc.errno == errno.EBADF:
            reason = "is not open (LISTEN_FDS counts more descriptors than were passed)"
        else:
            reason = f"is not a socket ({exc.strerror}); use ListenStream= in the .socket unit"
        raise SystemdError(subject, reason) from exc
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError as exc:
        sock.detach()
        raise SystemdError(subject, f"cannot be inspected ({exc.strerror})") from exc
    if sock.type != socket.SOCK_STREAM or not listening:
        kind = getattr(sock.type, "name", f"type {int(sock.type)}")
        state = "listening" if listening else "non-listening"
        sock.detach()
        raise SystemdError(
            subject,
            f"is a {state} {kind} socket; expected a listening SOCK_STREAM socket "
            "(ListenStream= in the .socket unit, Accept=no)",
        )
    return sock
