"""The metrics sinks: what the worker and the master report, as interfaces.

Owns: the ``Protocol`` classes that the worker (and the master) depend on,
and their null implementations. The composition root (``cli`` for the
master, ``workers.entry`` for a worker) picks the concrete implementation:
``metrics.recorder.Recorder`` when ``--metrics-bind`` is set, the null one
otherwise.

Rule: a leaf. Imports nothing from the package.
"""

from __future__ import annotations

from collections.abc import Collection
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

    def snapshot(self) -> bytes:
        return b""
