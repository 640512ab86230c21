"""The master's small HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz``.

Owns: ``MetricsServer``, non-blocking sockets driven by the master's own
selector (no thread, no event loop): accept, read one request head (at most
8 KiB, within ``READ_TIMEOUT_S``), answer, close. ``/healthz`` and
``/readyz`` are answered at once from the master's state. ``/metrics`` asks
the workers for fresh snapshots first (``Endpoints.start_collect``); the
master calls ``collected()`` once every asked worker answered or the
collection deadline passed, and every scrape waiting for it gets the same
rendering. A slow or silent client never blocks the master: its writes are
buffered and sent as the socket allows, and it is dropped at its deadline.

Rule: imports nothing from the package but ``control.channel`` (its reader).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from typing import Protocol

from app_server.control.channel import read_ready, write_ready

MAX_HEAD = 8192
READ_TIMEOUT_S = 5.0
WRITE_TIMEOUT_S = 10.0
METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class Endpoints(Protocol):
    def healthy(self) -> bool: ...

    def ready(self) -> bool: ...

    def start_collect(self) -> None: ...

    def render(self) -> bytes: ...


class _Conn:
    __slots__ = ("sock", "inbox", "outbox", "deadline", "waiting")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.inbox = b""
        self.outbox = b""
        self.deadline = now + READ_TIMEOUT_S
        self.waiting = False  # a /metrics scrape waiting for the collection


class MetricsServer:
    def __init__(
        self, listener: socket.socket, selector: selectors.BaseSelector, endpoints: Endpoints
    ) -> None:
        self.listener = listener
        self.selector = selector
        self.endpoints = endpoints
        self.conns: dict[int, _Conn] = {}
        self.collecting = False
        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ, self._accept)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return str(host), int(port)

    def _accept(self, mask: int) -> None:
        for _ in range(64):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. EMFILE: try again at the next readiness
            sock.setblocking(False)
            conn = _Conn(sock, time.monotonic())
            self.conns[sock.fileno()] = conn
            self.selector.register(sock, selectors.EVENT_READ, lambda m, c=conn: self._on_io(c, m))

    def _on_io(self, conn: _Conn, mask: int) -> None:
        if mask & selectors.EVENT_READ and not conn.outbox and not conn.waiting:
            self._read(conn)
        if mask & selectors.EVENT_WRITE and conn.outbox:
            self._flush(conn)

    def _read(self, conn: _Conn) -> None:
        for data in read_ready(lambda: conn.sock.recv(4096), b""):
            if not data:
                self._close(conn)
                return
            conn.inbox += data
            if conn.inbox.find(b"\r\n\r\n") >= 0:
                self._on_head(conn)
                return
            if len(conn.inbox) > MAX_HEAD:
                self._respond(conn, 431, b"request head too large\n")
                return

    def _on_head(self, conn: _Conn) -> None:
        request_line = conn.inbox.split(b"\r\n", 1)[0]
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self._respond(conn, 400, b"bad request\n")
            return
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            self._respond(
                conn, 405, b"method not allowed\n", head_only=False, extra=b"Allow: GET, HEAD\r\n"
            )
            return
        head_only = method == b"HEAD"
        if target == b"/metrics":
            conn.waiting = True
            conn.inbox = b"HEAD" if head_only else b"GET"
            conn.deadline = time.monotonic() + WRITE_TIMEOUT_S
            if not self.collecting:
                self.collecting = True
                self.endpoints.start_collect()
        elif target == b"/healthz":
            ok = self.endpoints.healthy()
            self._respond(
                conn, 200 if ok else 503, b"ok\n" if ok else b"no worker ready\n", head_only
            )
        elif target == b"/readyz":
            ok = self.endpoints.ready()
            self._respond(conn, 200 if ok else 503, b"ready\n" if ok else b"not ready\n", head_only)
        else:
            self._respond(conn, 404, b"not found: /metrics, /healthz, /readyz\n", head_only)

    def collected(self) -> None:
        """The workers answered (or the deadline passed): serve every waiting scrape."""
        self.collecting = False
        waiting = [c for c in self.conns.values() if c.waiting]
        if not waiting:
            return
        body = self.endpoints.render()
        for conn in waiting:
            conn.waiting = False
            self._respond(conn, 200, body, conn.inbox == b"HEAD", content_type=METRICS_TYPE)

    def _respond(
        self,
        conn: _Conn,
        status: int,
        body: bytes,
        head_only: bool = False,
        content_type: bytes = b"text/plain; charset=utf-8",
        extra: bytes = b"",
    ) -> None:
        reason = {
            200: b"OK",
            400: b"Bad Request",
            404: b"Not Found",
            405: b"Method Not Allowed",
            431: b"Request Header Fields Too Large",
            503: b"Service Unavailable",
        }.get(status, b"")
        conn.outbox = b"".join(
            (
                b"HTTP/1.1 %d %s\r\n" % (status, reason),
                b"Content-Type: " + content_type + b"\r\n",
                b"Content-Length: %d\r\n" % len(body),
                b"Cache-Control: no-store\r\nConnection: close\r\n",
                extra,
                b"\r\n",
                b"" if head_only else body,
            )
        )
        conn.deadline = time.monotonic() + WRITE_TIMEOUT_S
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        rest = write_ready(conn.sock, conn.outbox)
        if rest is None:
            self._close(conn)
            return
        conn.outbox = rest
        if not rest:
            self._close(conn)
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.modify(
                conn.sock, selectors.EVENT_WRITE, lambda m, c=conn: self._on_io(c, m)
            )

    def _close(self, conn: _Conn) -> None:
        self.conns.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_WR)
        conn.sock.close()

    def expire(self, now: float) -> None:
        """Drop clients past their deadline (the master calls this every step)."""
        for conn in list(self.conns.values()):
            if now >= conn.deadline and not conn.waiting:
                self._close(conn)

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self._close(conn)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.listener)
        self.listener.close()
