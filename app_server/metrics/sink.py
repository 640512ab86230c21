"""What the rest of the server may know of metrics: the sinks, as protocols.

Owns: ``WorkerMetrics`` (what one worker reports about the traffic it
serves) and ``MasterMetrics`` (what the master records or asks of metrics:
worker snapshots in, restarts and reloads counted, a rendering out), their
null implementations (metrics off), and ``WorkerView``, the data the master
hands over for a scrape. The composition roots pick the implementation:
``workers.entry`` the worker's (``metrics.recorder.Recorder`` when
``--metrics-bind`` is set), ``cli`` the master's (``metrics.store.MetricsStore``),
so the worker and the master depend on these interfaces only.

Rule: a leaf. Imports nothing from the package.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

# -- worker side ----------------------------------------------------------------

# The route label of every request that matched no route: labels stay bounded
# whatever paths clients send.
UNMATCHED = "<unmatched>"


class WorkerMetrics(Protocol):
    """What one worker reports about the traffic it serves.

    ``route`` is the routing answer of a request: a match, built once per
    route (its ``label`` is the route template; the object itself is a cheap
    identity key), or the refusal of a request that matched no route (no
    ``label``: counted under ``UNMATCHED``).
    """

    def request_done(self, route: object, method: str, status: int, seconds: float) -> None: ...

    def request_refused(self, status: int) -> None: ...

    def websocket_opened(self, route: str) -> None: ...

    def websocket_closed(self, route: str, code: int, received: int, sent: int) -> None: ...

    def ping_answered(self, rtt_s: float) -> None: ...

    def watch_connections(self, connections: Collection[object]) -> None: ...

    def watch_channels(self, hub: object) -> None:
        """The worker's channel hub, whose plain counters each snapshot carries."""

    def snapshot(self) -> bytes: ...


class NullWorkerMetrics:
    """Records nothing (``--metrics-bind`` off).

    The worker's hot path checks for this one once, at startup
    (``ServerState``), and then skips every call: a method call per request,
    even an empty one, is measurable there.
    """

    __slots__ = ()

    def request_done(self, route: object, method: str, status: int, seconds: float) -> None:
        return None

    def request_refused(self, status: int) -> None:
        return None

    def websocket_opened(self, route: str) -> None:
        return None

    def websocket_closed(self, route: str, code: int, received: int, sent: int) -> None:
        return None

    def ping_answered(self, rtt_s: float) -> None:
        return None

    def watch_connections(self, connections: Collection[object]) -> None:
        return None

    def watch_channels(self, hub: object) -> None:
        return None

    def snapshot(self) -> bytes:
        return b""


# -- master side ----------------------------------------------------------------


@dataclass
class WorkerView:
    """What the metrics need from the master: workers by state, each slot's usage."""

    states: dict[str, int]
    slots: list[tuple[int, int, float]]  # slot, RSS bytes, CPU seconds of its current worker
    desired: int = 0  # the worker count the master keeps (--workers, changed by scaling)
    # Channel deliveries the master's relay dropped for workers that fell behind.
    relay_dropped: int = 0


class MasterMetrics(Protocol):
    """The master's metrics sink; ``workers`` is set by the master to its live view."""

    workers: Callable[[], WorkerView] | None

    def update(self, pid: int, payload: bytes) -> None:
        """Worker ``pid`` sent a snapshot (STATS)."""

    def worker_gone(self, pid: int, slot: int, cpu_seconds: float) -> None:
        """Worker ``pid`` of ``slot`` exited after using ``cpu_seconds``."""

    def restarted(self, reason: str) -> None:
        """A slot got a new worker: crash, timeout, reload, scale or a recycle label."""

    def reloaded(self, ok: bool) -> None:
        """A rolling reload ended, complete or aborted."""

    def render(self) -> bytes:
        """The exposition text for a scrape."""


class NullMasterMetrics:
    """Metrics off: every record is dropped, a rendering is empty."""

    def __init__(self) -> None:
        self.workers: Callable[[], WorkerView] | None = None

    def update(self, pid: int, payload: bytes) -> None:
        pass

    def worker_gone(self, pid: int, slot: int, cpu_seconds: float) -> None:
        pass

    def restarted(self, reason: str) -> None:
        pass

    def reloaded(self, ok: bool) -> None:
        pass

    def render(self) -> bytes:
        return b""
