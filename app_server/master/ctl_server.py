"""The master's control socket: ``app-server ctl`` talks to it.

Owns: ``bind_control_socket`` (a unix socket created with mode 0600, a stale
file of a dead master replaced, a live one never), ``default_path`` (where
the socket goes when ``--control-socket`` is not given), the framing both
ends use (``encode_frame``, ``FrameReader``), ``ControlServer``,
``worker_status`` (one worker's row of ``ctl status``) and ``ReloadWaits``.

``ControlServer`` is one component of the master's loop: its listener and
every connection are registered on the master's selector with a callback,
every socket is non-blocking and every buffer bounded, so a client that
sends half a frame, never reads its answer or never closes cannot hold the
loop: it is dropped at ``IDLE_TIMEOUT_S`` (at most ``MAX_CLIENTS`` at once).
On accept the peer's uid is read with ``SO_PEERCRED`` (the kernel's record
of who connected, not something the client claims): anyone but root and the
master's own user gets one error answer and is closed. A request is one
frame (4-byte big-endian length, then a JSON object of at most ``MAX_FRAME``
bytes): ``{"command": NAME, ...}``. The answer is one frame: ``{"ok": true,
...}`` or ``{"ok": false, "error": TEXT}``; a malformed or unknown request
gets the latter, never an exception in the loop. The master's handler
answers at once or later (``reload --wait``): until then the connection has
no deadline.

Rule: imports nothing from the package but ``master.model``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import selectors
import socket
import stat
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from app_server.control.channel import write_ready
from app_server.master.model import Phase, Worker

log = logging.getLogger("app_server.error")
MAX_FRAME = 64 * 1024  # a request is a command and a few arguments; answers are bigger
MAX_ANSWER = 16 * 1024 * 1024  # what the client accepts (a status of thousands of workers)
IDLE_TIMEOUT_S = 5.0  # to send a whole request, and to read the whole answer
MAX_CLIENTS = 64  # beyond, a new client is closed at once (the master's fds are bounded)
SOCKET_NAME = "app-server.sock"
_LENGTH = struct.Struct("!I")
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

Answer = dict[str, Any]


class ControlSocketError(Exception):
    """The control socket cannot be created at the path asked: one line."""


# -- where, and creating it --------------------------------------------------------------


def default_path(environ: Mapping[str, str], pid_file: str | None) -> str | None:
    """``$RUNTIME_DIRECTORY/app-server.sock`` under systemd (``RuntimeDirectory=``),
    else beside the pid file (``/run/x.pid`` -> ``/run/x.ctl``), else None (off).

    ``app-server ctl`` finds the socket the same way.
    """
    runtime = environ.get("RUNTIME_DIRECTORY", "")
    if runtime:
        # systemd lists several directories separated by ':' when the unit names several.
        return os.path.join(runtime.split(":")[0], SOCKET_NAME)
    if pid_file:
        root = pid_file[:-4] if pid_file.endswith(".pid") else pid_file
        return root + ".ctl"
    return None


def bind_control_socket(path: str) -> socket.socket:
    """A listening unix socket at ``path``, mode 0600, owned by this process's user.

    A socket file left by a dead master is replaced; one a live master answers
    on, or any other kind of file, is an error (``ControlSocketError``).
    """
    if len(os.fsencode(path)) >= 108:
        raise ControlSocketError(f"control socket path too long (108 bytes at most): {path}")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ControlSocketError(
            f"cannot create the control socket {path}: {exc.strerror}"
        ) from exc
    else:
        if not stat.S_ISSOCK(mode):
            raise ControlSocketError(
                f"cannot create the control socket {path}: a file that is not a socket is there"
            )
        if _answers(path):
            raise ControlSocketError(
                f"cannot create the control socket {path}: another server is listening on it"
            )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a dead master's
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask makes the file 0600 from its creation: there is no moment in
    # which another user could connect before the chmod.
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise ControlSocketError(
            f"cannot create the control socket {path}: {exc.strerror}"
        ) from exc
    finally:
        os.umask(old_umask)
    try:
        os.chmod(path, 0o600)
        sock.listen(16)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise ControlSocketError(
            f"cannot create the control socket {path}: {exc.strerror}"
        ) from exc
    sock.setblocking(False)
    return sock


def _answers(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
    return True


# -- framing ----------------------------------------------------------------------------


def encode_frame(obj: Mapping[str, Any]) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return _LENGTH.pack(len(body)) + body


class FrameError(Exception):
    """The bytes are not a frame of this protocol (too big, not a JSON object)."""


class FrameReader:
    """Bytes in, whole JSON objects out; refuses a frame above ``limit`` before reading it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def next(self) -> dict[str, Any] | None:
        if len(self.buffer) < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(self.buffer)
        if length > self.limit:
            raise FrameError(f"frame of {length} bytes, at most {self.limit}")
        if len(self.buffer) < _LENGTH.size + length:
            return None
        body = bytes(self.buffer[_LENGTH.size : _LENGTH.size + length])
        del self.buffer[: _LENGTH.size + length]
        try:
            obj = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise FrameError(f"not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise FrameError("a request is a JSON object")
        return obj


# -- the server ---------------------------------------------------------------------------


class Conn:
    """One client: its bounded input, its answer, its deadline."""

    __slots__ = ("sock", "reader", "outbox", "deadline", "pending", "answered", "closed", "uid")

    def __init__(self, sock: socket.socket, uid: int, now: float) -> None:
        self.sock, self.uid = sock, uid
        self.reader = FrameReader(MAX_FRAME)
        self.outbox = b""
        self.deadline = now + IDLE_TIMEOUT_S
        self.pending = False  # the master answers later (reload --wait)
        self.answered = False  # the answer is queued or sent: what comes in is discarded
        self.closed = False


Handler = Callable[[dict[str, Any], Conn], "Answer | None"]


class ControlServer:
    """Accepts ``ctl`` clients on the master's selector; one request, one answer each."""

    def __init__(
        self, listener: socket.socket, path: str, selector: selectors.BaseSelector, handler: Handler
    ) -> None:
        self.listener, self.path, self.selector, self.handler = listener, path, selector, handler
        self.conns: dict[int, Conn] = {}
        self.allowed = {0, os.geteuid()}
        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ, self._accept)
        log.info("control socket on %s", path)

    @property
    def deadline(self) -> float:
        return min((c.deadline for c in self.conns.values()), default=float("inf"))

    def _accept(self, mask: int) -> None:
        for _ in range(16):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. EMFILE: try again at the next readiness
            if len(self.conns) >= MAX_CLIENTS:
                sock.close()
                log.warning("control socket: %d clients already, one more refused", MAX_CLIENTS)
                continue
            sock.setblocking(False)
            _, uid, _ = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
            conn = Conn(sock, uid, time.monotonic())
            self.conns[sock.fileno()] = conn
            self.selector.register(sock, selectors.EVENT_READ, lambda m, c=conn: self._on_io(c, m))
            if uid not in self.allowed:
                log.warning(
                    "control socket: refused a client of uid %d (only root and uid %d are obeyed)",
                    uid,
                    os.geteuid(),
                )
                self.answer(
                    conn,
                    {
                        "ok": False,
                        "error": f"permission denied: uid {uid} may not control this server",
                    },
                )

    def _on_io(self, conn: Conn, mask: int) -> None:
        if mask & selectors.EVENT_WRITE and conn.outbox:
            self._flush(conn)
        if not conn.closed and mask & selectors.EVENT_READ:
            self._read(conn)

    def _read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)  # the client went (a pending answer is dropped)
            return
        if conn.pending or conn.answered:
            return  # one request per connection: what follows it is read and dropped
        conn.reader.feed(data)
        try:
            request = conn.reader.next()
        except FrameError as exc:
            self.answer(conn, {"ok": False, "error": f"bad request: {exc}"})
            return
        if request is None:
            return
        try:
            answer = self.handler(request, conn)
        except Exception as exc:  # noqa: BLE001 - a request must never bring the master down
            log.exception("control socket: the %r request failed", request.get("command"))
            answer = {"ok": False, "error": f"internal error: {exc}"}
        if answer is None:
            if not conn.closed and not conn.answered:
                conn.pending, conn.deadline = True, float("inf")
        else:
            self.answer(conn, answer)

    def answer(self, conn: Conn, answer: Answer) -> None:
        """Send ``answer`` and close once it is out (or at the idle deadline)."""
        if conn.closed or conn.answered:
            return
        conn.pending, conn.answered = False, True
        conn.outbox = encode_frame(answer)
        conn.deadline = time.monotonic() + IDLE_TIMEOUT_S
        self._flush(conn)

    def _flush(self, conn: Conn) -> None:
        rest = write_ready(conn.sock, conn.outbox)
        if rest is None:
            self._close(conn)
            return
        conn.outbox = rest
        if not rest:
            # Half-close and wait for the client's EOF (bounded by the deadline):
            # closing a unix socket with unread input resets it, and the client
            # would lose the answer it has not read yet (a refused peer's).
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)
            self.selector.modify(
                conn.sock, selectors.EVENT_READ, lambda m, c=conn: self._on_io(c, m)
            )
        else:
            self.selector.modify(
                conn.sock,
                selectors.EVENT_READ | selectors.EVENT_WRITE,
                lambda m, c=conn: self._on_io(c, m),
            )

    def expire(self, now: float) -> None:
        for conn in list(self.conns.values()):
            if now >= conn.deadline:
                self._close(conn)

    def _close(self, conn: Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.conns.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        conn.sock.close()

    def close(self) -> None:
        """The master exits: close every client, the listener, and remove the file."""
        for conn in list(self.conns.values()):
            self._close(conn)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.listener)
        self.listener.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def close_in_child(self) -> None:
        """In a forked worker: drop the master's sockets (the file stays the master's)."""
        for conn in self.conns.values():
            conn.sock.close()
        self.listener.close()


# -- status ---------------------------------------------------------------------------------

STATE_NAMES = {Phase.BOOTING: "starting", Phase.READY: "ready", Phase.STOPPING: "stopping"}


def worker_status(worker: Worker, now: float) -> dict[str, Any]:
    """One worker as ``status`` shows it: the master's record and its last heartbeat.

    RSS and CPU come from /proc (psutil), never from the worker: a hung
    worker is shown, with a growing ``heartbeat_age_s``, without waiting for it.
    """
    import psutil  # a dependency; only when asked

    rss, cpu = 0, 0.0
    try:
        process = psutil.Process(worker.pid)
        with process.oneshot():
            rss = process.memory_info().rss
            times = process.cpu_times()
            cpu = times.user + times.system
    except psutil.Error:
        pass
    return {
        "pid": worker.pid,
        "slot": worker.slot.index,
        "state": STATE_NAMES[worker.phase],
        "uptime_s": round(now - worker.started, 3),
        "requests": worker.requests,
        "http_connections": worker.http_connections,
        "websockets": worker.websockets,
        "rss_bytes": rss,
        "cpu_s": round(cpu, 3),
        "heartbeat_age_s": round(max(0.0, now - worker.last_seen), 3),
    }


# -- reload --wait --------------------------------------------------------------------------


class ReloadWaits:
    """Who waits for which reload, and for which old workers to exit.

    Pure bookkeeping (no socket): ``answer`` is called with each waiter and
    its answer. A reload that aborted is answered at once with its reason;
    one that succeeded once every worker it retired has exited.
    """

    def __init__(self, answer: Callable[[Conn, Answer], None]) -> None:
        self.answer = answer
        self.by_reload: dict[object, list[Conn]] = {}
        self.draining: list[tuple[Conn, set[int], Answer]] = []

    def wait(self, reload: object, conn: Conn) -> None:
        self.by_reload.setdefault(reload, []).append(conn)

    def ended(
        self,
        reload: object,
        failure: str | None,
        retired: Iterable[Worker],
        replaced: int,
        took_s: float,
    ) -> None:
        waiters = self.by_reload.pop(reload, [])
        if not waiters:
            return
        if failure is not None:
            for conn in waiters:
                self.answer(conn, {"ok": False, "error": f"reload aborted: {failure}"})
            return
        left = {w.pid for w in retired if w.exit_code is None}
        for conn in waiters:
            self.draining.append(
                (conn, set(left), {"ok": True, "replaced": replaced, "took_s": round(took_s, 3)})
            )
        self.exited(None)

    def exited(self, pid: int | None) -> None:
        still = []
        for conn, left, answer in self.draining:
            left.discard(pid)
            if left:
                still.append((conn, left, answer))
            else:
                self.answer(conn, answer)
        self.draining = still

    def abandon(self, why: str) -> None:
        """The master stops: every waiter is told why, now."""
        for waiters in self.by_reload.values():
            for conn in waiters:
                self.answer(conn, {"ok": False, "error": why})
        for conn, _, _ in self.draining:
            self.answer(conn, {"ok": False, "error": why})
        self.by_reload.clear()
        self.draining = []
