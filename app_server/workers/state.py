"""State shared by every connection of one worker.

Owns: ``ServerState``: the open connections, the cached ``Date`` line and
clock reading (refreshed by one ticker instead of per request), the draining
flag, the served count that ``--max-requests`` watches, and the frozen
configuration each connection needs.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from app_server.metrics.sink import NullWorkerMetrics, WorkerMetrics
from app_server.protocols.http.connection import Timeouts
from app_server.protocols.http.framing import date_line
from app_server.settings.model import WebSocketLimits

if TYPE_CHECKING:
    from app_server.logs import AccessLog
    from app_server.settings.model import HttpLimits
    from app_server.workers.app_contract import ForwardedPolicy


NEVER = 1 << 62


class ServerState:
    __slots__ = (
        "app",
        "limits",
        "access_log",
        "forwarded",
        "connections",
        "date",
        "now",
        "draining",
        "requests_served",
        "ws_limits",
        "corked",
        "recorder",
        "recycle_at",
        "on_recycle",
        "max_connections",
        "timeouts",
    )

    def __init__(
        self,
        app: Any,
        limits: HttpLimits,
        access_log: AccessLog | None,
        forwarded: ForwardedPolicy | None,
        now: float,
        ws_limits: WebSocketLimits | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.access_log = access_log if access_log is not None and access_log.enabled else None
        self.forwarded = forwarded
        # Every open connection: HTTP ones and, after their handshake,
        # WebSockets (a connection counts once, as one or the other).
        self.connections: set[Any] = set()
        # --limit-concurrency: a connection opened beyond this many is refused.
        self.max_connections = limits.limit_concurrency or NEVER
        self.date = date_line(time.time())
        self.now = now
        self.draining = False
        self.requests_served = 0
        if ws_limits is None:
            ws_limits = WebSocketLimits()
        self.ws_limits = ws_limits
        # What each HTTP connection's rules (HttpConnection) time, built once.
        self.timeouts = Timeouts(
            limits.keep_alive_timeout_s,
            limits.request_timeout_s,
            limits.response_timeout_s,
            limits.response_write_timeout_s,
            ws_limits.timeout_s,
        )
        # WebSocket connections with broadcast frames corked until the end of
        # this loop pass (see WebSocketConnection.cork).
        self.corked: list[Any] = []
        # --max-requests: when requests_served reaches recycle_at, on_recycle()
        # (set by the supervised worker) asks the master for a replacement.
        self.recycle_at = NEVER
        self.on_recycle: Any = None
        # Metrics of this worker. The null sink becomes None here, once, so the
        # request path pays one ``is not None`` test and no call when off.
        if isinstance(metrics, NullWorkerMetrics):
            metrics = None
        self.recorder: WorkerMetrics | None = metrics
        if metrics is not None:
            metrics.watch_connections(self.connections)

    def count_served(self) -> None:
        """One more request (or closed WebSocket) served; recycle at the limit.

        The HTTP hot path does the same inline (``HttpProtocol._after_response``).
        """
        self.requests_served += 1
        if self.requests_served >= self.recycle_at:
            self.recycle_at = NEVER  # once
            self.on_recycle()

    def tick(self, now: float) -> None:
        """Refresh the clock and Date line, and enforce every connection's deadline."""
        self.now = now
        self.date = date_line(time.time())
        for conn in list(self.connections):
            conn.check_deadline(now)
