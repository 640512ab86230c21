"""A steady-load HTTP client for system tests that counts every error.

``Load(port, variant)`` is a context manager: for the duration of the
``with`` block, ``connections`` threads each issue GET requests back to back
against ``127.0.0.1:port``:

* ``keepalive``: each thread keeps one persistent connection and reuses it.
  It reconnects only after a response that says ``Connection: close`` (the
  server's way to end a keep-alive connection while draining; not an error),
  after an error, or (if ``requests_per_connection`` is set) after that many
  complete responses. With ``idle_max_s`` it waits a random time (up to that,
  seeded per thread) before each reuse, so requests meet the server's closes
  of idle connections at any moment. A GET on a reused connection that meets
  EOF or a reset before any byte of its response is retried once on a new
  connection, as HTTP clients do (RFC 9112 §9.3.1: the server may close an
  idle connection just as a request is sent); the retry is counted in
  ``retries``, and a retry that fails too is an ERROR.
* ``new_connection``: a fresh TCP connection per request (the request says
  ``Connection: close``, so the server closes first and the client's
  ephemeral ports are not left in TIME_WAIT).

Failures are counted by kind (``refused``, ``reset``, ``eof``, ``timeout``,
``status`` for a non-200, ``bad_body``, ``other``); every 200 response is
recorded with its send/receive times (``time.monotonic()``) and its body, so
a test can check which code served which request. Apart from that one retry
nothing is retried, so ``total == ok + failed`` and every failure is visible.

``Connection`` is the raw HTTP/1.1 client both variants use (raw sockets, so
reuse is under our control); tests may use it directly.
"""

from __future__ import annotations

import random
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType

KINDS = ("refused", "reset", "eof", "timeout", "status", "bad_body", "other")
DEFAULT_BODY = re.compile(r"^(\S+) (\d+)$")  # the test apps answer "<version> <pid>"


class RequestError(Exception):
    def __init__(self, kind: str, detail: str, before_response: bool = False) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        # The connection ended (EOF, reset, broken pipe) before any byte of
        # the response: the request may be retried on a new connection.
        self.before_response = before_response


@dataclass(frozen=True, slots=True)
class Response:
    sent: float  # monotonic time the request was about to be written
    received: float  # monotonic time its response was complete
    body: str
    reused: bool  # sent on a connection that had already served a response

    @property
    def version(self) -> str:
        return self.body.split(" ", 1)[0]

    @property
    def pid(self) -> int:
        return int(self.body.rsplit(" ", 1)[1])


@dataclass(frozen=True, slots=True)
class Failure:
    t: float
    kind: str
    detail: str
    reused: bool


class Connection:
    """One HTTP/1.1 client connection over a raw socket."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.served = 0  # responses read on this connection
        self.open = True
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except ConnectionRefusedError as exc:
            raise RequestError("refused", str(exc)) from None
        except TimeoutError as exc:
            raise RequestError("timeout", f"connect: {exc}") from None
        except ConnectionResetError as exc:
            raise RequestError("reset", f"connect: {exc}") from None
        except OSError as exc:
            raise RequestError("other", f"connect: {exc!r}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local_port = self.sock.getsockname()[1]  # to find this connection in server logs
        self.file = self.sock.makefile("rb")
        self.host = host
        self.port = port

    def close(self) -> None:
        self.open = False
        try:
            self.file.close()
        finally:
            self.sock.close()

    def get(self, path: str = "/", close: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One request; (status, headers with lower-case names, body) or RequestError.

        After a response with ``Connection: close`` the connection is closed
        (``self.open`` is False).
        """
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if close:
            request += "Connection: close\r\n"
        started = False  # a byte of the response has arrived
        try:
            self.sock.sendall((request + "\r\n").encode())
            status_line = self.file.readline(65536)
            if not status_line:
                raise RequestError("eof", "EOF before any response byte", before_response=True)
            started = True
            parts = status_line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise RequestError("other", f"bad status line {status_line!r}")
            status = int(parts[1])
            headers: dict[str, str] = {}
            while True:
                line = self.file.readline(65536)
                if not line:
                    raise RequestError("eof", "EOF inside the response head")
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if "content-length" not in headers:
                raise RequestError("other", f"no Content-Length: {headers}")
            length = int(headers["content-length"])
            body = self.file.read(length) if length else b""
            if len(body) < length:
                raise RequestError("eof", f"EOF after {len(body)} of {length} body bytes")
        except RequestError:
            raise
        except TimeoutError as exc:
            raise RequestError("timeout", str(exc) or "socket timeout") from None
        except ConnectionResetError as exc:
            raise RequestError("reset", str(exc), before_response=not started) from None
        except BrokenPipeError as exc:
            raise RequestError("eof", f"send: {exc}", before_response=not started) from None
        except (OSError, ValueError) as exc:
            raise RequestError("other", repr(exc)) from None
        self.served += 1
        if close or "close" in headers.get("connection", "").lower():
            self.close()
        return status, headers, body


@dataclass
class Load:
    port: int
    variant: str = "keepalive"  # or "new_connection"
    connections: int = 2  # client threads, one connection each at a time
    path: str = "/"
    timeout: float = 5.0
    body_re: re.Pattern[str] = DEFAULT_BODY
    # keepalive: the client closes its connection after this many responses
    # (0: never), so that connections keep landing on every worker.
    requests_per_connection: int = 0
    # keepalive: wait up to this many seconds (random) before reusing a connection.
    idle_max_s: float = 0.0
    seed: int = 0
    responses: list[Response] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    reconnects: int = 0  # keepalive: connections ended by the server's Connection: close
    retries: int = 0  # reused connections closed before any response byte, retried once
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.variant not in ("keepalive", "new_connection"):
            raise ValueError(f"unknown load variant {self.variant!r}")

    def __enter__(self) -> Load:
        for index in range(self.connections):
            thread = threading.Thread(
                target=self._run,
                args=(random.Random(self.seed + index),),
                name=f"load-{index}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        stop_threads(self._stop, self._threads, self.timeout + 5, "load")

    # -- results -------------------------------------------------------------------

    @property
    def ok(self) -> int:
        return len(self.responses)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def total(self) -> int:
        return self.ok + self.failed

    def by_kind(self) -> dict[str, int]:
        counts = Counter(f.kind for f in self.failures)
        return {kind: counts[kind] for kind in KINDS if counts[kind]}

    def summary(self) -> str:
        text = (
            f"{self.variant}: {self.failed} failed / {self.total} requests"
            f" ({self.reconnects} server-initiated Connection: close,"
            f" {self.retries} retried after an idle close)"
        )
        if self.failures:
            text += f"; by kind {self.by_kind()}; first: {self.failures[:5]}"
        return text

    def since(self, t: float) -> list[Response]:
        """Responses to requests sent at or after ``t``."""
        with self._lock:
            snapshot = list(self.responses)
        return [r for r in snapshot if r.sent >= t]

    def wait_responses(self, since: float, count: int, timeout: float = 20.0) -> list[Response]:
        """Wait until ``count`` requests sent at or after ``since`` got a 200."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.since(since)
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(got)} of {count} responses within {timeout}s; {self.summary()}"
                )
            alive = [t for t in self._threads if t.is_alive()]
            assert alive, "every load thread died"
            time.sleep(0.02)  # polling interval

    # -- the clients ---------------------------------------------------------------

    def _run(self, rng: random.Random) -> None:
        conn: Connection | None = None
        keepalive = self.variant == "keepalive"
        try:
            while not self._stop.is_set():
                reused = False
                sent = time.monotonic()
                try:
                    if conn is not None and conn.open and self.idle_max_s:
                        time.sleep(rng.uniform(0, self.idle_max_s))  # load shape, not a sync
                    if conn is None or not conn.open:
                        conn = None
                        conn = Connection(self.port, timeout=self.timeout)
                    reused = conn.served > 0
                    sent = time.monotonic()
                    try:
                        status, headers, body = conn.get(self.path, close=not keepalive)
                    except RequestError as exc:
                        if not (reused and exc.before_response):
                            raise
                        # RFC 9112 §9.3.1: the server closed the idle connection
                        # as the request went out; a GET is retried once.
                        conn.close()
                        with self._lock:
                            self.retries += 1
                        conn = None
                        conn = Connection(self.port, timeout=self.timeout)
                        status, headers, body = conn.get(self.path, close=not keepalive)
                except RequestError as exc:
                    where = f" (client port {conn.local_port})" if conn is not None else ""
                    self._fail(sent, exc.kind, exc.detail + where, reused)
                    if conn is not None and conn.open:
                        conn.close()
                    conn = None
                    time.sleep(0.01)  # not a retry: only keeps a dead server from a busy loop
                    continue
                received = time.monotonic()
                if keepalive and not conn.open:
                    with self._lock:
                        self.reconnects += 1
                elif (
                    keepalive
                    and self.requests_per_connection
                    and conn.served >= self.requests_per_connection
                ):
                    conn.close()  # after a whole response: the client's own choice
                text = body.decode("utf-8", "replace")
                if status != 200:
                    self._fail(sent, "status", f"{status} {text[:200]!r}", reused)
                elif not self.body_re.match(text):
                    self._fail(sent, "bad_body", repr(text[:200]), reused)
                else:
                    with self._lock:
                        self.responses.append(Response(sent, received, text, reused))
        except BaseException as exc:  # noqa: BLE001 - a crashed client is a failure, never silent
            self._fail(time.monotonic(), "other", f"client crashed: {exc!r}", False)
        finally:
            if conn is not None and conn.open:
                conn.close()

    def _fail(self, t: float, kind: str, detail: str, reused: bool) -> None:
        with self._lock:
            self.failures.append(Failure(t, kind, detail, reused))


def stop_threads(
    stop: threading.Event, threads: list[threading.Thread], timeout: float, what: str
) -> None:
    """Tell client threads to stop and wait for each (bounded); fail naming any left."""
    stop.set()
    for thread in threads:
        thread.join(timeout=timeout)
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"{what} threads did not stop: {alive}"
