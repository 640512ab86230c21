"""Client threads that record every request, to measure how long clients were stuck.

``Clients(port, new_connection=N, keepalive=K)`` is a context manager: while
it is open, N threads send GET requests back to back, each on a new TCP
connection (``Connection: close``), and K threads each keep one persistent
connection (a new one only after an error or a server's ``Connection:
close``). Every request is recorded as a ``Sample``: when it started (before
the connect, for a new connection), when it ended (response complete, or the
error seen), the worker pid that answered (the test apps answer "<version>
<pid>") or the error, and the client's local port and connection number, so
a test can tell which process owned the connection.

``stuck_fraction(samples, start, end, threads)`` is the share of the
threads' time in ``[start, end]`` spent in requests that failed or took
longer than ``STUCK_S``: what a user would call stuck.

Nothing is retried, and the socket timeout is long (a request waiting on a
hung worker stays in flight until the worker dies), so every stuck request
is seen as such.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

from tests.system.load import DEFAULT_BODY, Connection, RequestError, stop_threads

STUCK_S = 1.0
_CONNECTION_IDS = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Sample:
    thread: str  # "new-<n>" or "keepalive-<n>"
    start: float  # monotonic
    end: float
    pid: int | None  # the worker that answered; None on error
    error: str | None  # "<kind>: <detail>" on failure
    local_port: int | None  # the client side of the connection (None: connect failed)
    connection: int  # this client's connection number (keep-alive: shared by its requests)
    owner: int | None  # the pid that answered earlier requests on this connection

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def stuck(self) -> bool:
        return self.failed or self.end - self.start > STUCK_S


@dataclass
class Clients:
    port: int
    new_connection: int = 4
    keepalive: int = 4
    timeout: float = 60.0  # long: a request held by a hung worker is not cut by the client
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _in_flight: dict[str, float] = field(default_factory=dict)

    def __enter__(self) -> Clients:
        names = [f"new-{i}" for i in range(self.new_connection)]
        names += [f"keepalive-{i}" for i in range(self.keepalive)]
        for name in names:
            thread = threading.Thread(target=self._run, args=(name,), name=name, daemon=True)
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
        stop_threads(self._stop, self._threads, self.timeout + 5, "client")

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)

    def started_since(self, t: float) -> set[str]:
        """The threads with a finished request that started at or after ``t``."""
        return {s.thread for s in self.snapshot() if s.start >= t}

    @property
    def thread_names(self) -> list[str]:
        return [t.name for t in self._threads]

    def _run(self, name: str) -> None:
        keepalive = name.startswith("keepalive")
        conn: Connection | None = None
        number = 0
        owner: int | None = None
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                if conn is None or not conn.open:
                    conn, owner = None, None
                    number = next(_CONNECTION_IDS)
                    conn = Connection(self.port, timeout=self.timeout)
                status, _, body = conn.get("/", close=not keepalive)
            except RequestError as exc:
                port = conn.local_port if conn is not None else None
                self._record(
                    Sample(name, start, time.monotonic(), None, str(exc), port, number, owner)
                )
                if conn is not None and conn.open:
                    conn.close()
                conn = None
                continue
            end = time.monotonic()
            text = body.decode("utf-8", "replace")
            match = DEFAULT_BODY.match(text)
            error = None if status == 200 and match else f"status: {status} {text[:100]!r}"
            pid = int(match.group(2)) if match and error is None else None
            self._record(Sample(name, start, end, pid, error, conn.local_port, number, owner))
            owner = pid if pid is not None else owner
        if conn is not None and conn.open:
            conn.close()

    def _record(self, sample: Sample) -> None:
        with self._lock:
            self.samples.append(sample)


def stuck_fraction(samples: list[Sample], start: float, end: float, threads: int) -> float:
    """Share of ``threads`` x ``[start, end]`` spent in stuck requests (clipped to it)."""
    if threads <= 0 or end <= start:
        raise ValueError("an empty window")
    stuck = 0.0
    for sample in samples:
        if sample.stuck:
            stuck += max(0.0, min(end, sample.end) - max(start, sample.start))
    return stuck / (threads * (end - start))
