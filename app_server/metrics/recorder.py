"""What one worker counts, and the snapshot it sends the master.

Owns: ``Recorder`` (plain ints and dicts in the worker's own memory: no
lock, no IPC, no prometheus-client object on the request path), ``Histogram``
and the snapshot format. The master asks for a snapshot at each scrape (and a
worker sends one every few heartbeats and one last time as it exits), so
recording costs a few dictionary updates per request and nothing else.

Labels stay bounded whatever clients send: ``route`` is the route's template
(``/chat/<room>``), every unmatched request shares ``UNMATCHED``, methods are
the parser's known tokens, and close codes are 16-bit numbers.

WebSocket messages are counted on the connection (one integer increment per
message) and folded into the recorder when it closes; a snapshot adds the
counts of the connections still open. Channel counts are the channel hub's
own plain counters (``channels``), read at snapshot time: the recorder adds
nothing to the delivery path.

Implements ``metrics.sink.WorkerMetrics``.

Rule: imports nothing from the package but ``metrics.sink``.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Collection
from typing import Any

from app_server.metrics.sink import UNMATCHED

SNAPSHOT_VERSION = 1
OTHER = "<other>"  # the method label of a request refused before it was parsed
DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
RTT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """Counts per bucket (not cumulative; the last is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class _RouteStats:
    """One (route, method): responses by status and the duration histogram."""

    __slots__ = ("statuses", "durations", "timed")

    def __init__(self, timed: bool = True) -> None:
        self.statuses: dict[int, int] = {}
        self.durations = Histogram(DURATION_BUCKETS)
        self.timed = timed


class Recorder:
    __slots__ = (
        "routes",
        "by_route",
        "ws_open",
        "ws_total",
        "ws_messages",
        "ws_closes",
        "ping_rtt",
        "connections",
        "channels",
    )

    def __init__(self) -> None:
        self.routes: dict[str, dict[str, _RouteStats]] = {}  # route -> method -> stats
        self.by_route: dict[Any, dict[str, _RouteStats]] = {}  # Route object -> the same
        self.ws_open: dict[str, int] = {}
        self.ws_total: dict[str, int] = {}
        self.ws_messages: dict[tuple[str, str], int] = {}
        self.ws_closes: dict[tuple[str, int], int] = {}
        self.ping_rtt = Histogram(RTT_BUCKETS)
        self.connections: Any = ()  # the worker's open connections, for live counts
        self.channels: Any = None  # the worker's channel hub, once it runs

    # -- HTTP ----------------------------------------------------------------

    def request_done(self, route: object, method: str, status: int, seconds: float) -> None:
        """Once per request: ``route`` is the route's match, built once per
        route (its ``label`` is the template), or the refusal of an unmatched
        request (no label)."""
        methods = self.by_route.get(route)  # identity hash: no string hashing
        if methods is None:
            methods = self._methods_of(route)
        stats = methods.get(method)
        if stats is None:
            stats = methods[method] = _RouteStats()
        statuses = stats.statuses
        statuses[status] = statuses.get(status, 0) + 1
        histogram = stats.durations
        histogram.counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        histogram.sum += seconds

    def _methods_of(self, route: object) -> dict[str, _RouteStats]:
        label = getattr(route, "label", None)
        if not isinstance(label, str):
            return self.routes.setdefault(UNMATCHED, {})  # one label for every unmatched path
        methods = self.routes.setdefault(label, {})
        self.by_route[route] = methods
        return methods

    def request_refused(self, status: int) -> None:
        """Refused before it could be routed: no method or route to name."""
        methods = self.routes.setdefault(UNMATCHED, {})
        stats = methods.get(OTHER)
        if stats is None:
            stats = methods[OTHER] = _RouteStats(timed=False)
        stats.statuses[status] = stats.statuses.get(status, 0) + 1

    # -- WebSocket -----------------------------------------------------------

    def websocket_opened(self, route: str) -> None:
        self.ws_open[route] = self.ws_open.get(route, 0) + 1
        self.ws_total[route] = self.ws_total.get(route, 0) + 1

    def websocket_closed(self, route: str, code: int, received: int, sent: int) -> None:
        self.ws_open[route] = self.ws_open.get(route, 1) - 1
        key = (route, code)
        self.ws_closes[key] = self.ws_closes.get(key, 0) + 1
        self._add_messages(route, received, sent)

    def _add_messages(self, route: str, received: int, sent: int) -> None:
        messages = self.ws_messages
        if received:
            messages[(route, "in")] = messages.get((route, "in"), 0) + received
        if sent:
            messages[(route, "out")] = messages.get((route, "out"), 0) + sent

    def ping_answered(self, rtt_s: float) -> None:
        self.ping_rtt.observe(rtt_s)

    def watch_connections(self, connections: Collection[object]) -> None:
        """The worker's open connections, read at each snapshot for live counts."""
        self.connections = connections

    def watch_channels(self, hub: object) -> None:
        """The channel hub, read at each snapshot: its counters travel with ours."""
        self.channels = hub

    # -- the snapshot --------------------------------------------------------

    def snapshot(self) -> bytes:
        """Everything counted so far (open connections included), as JSON bytes."""
        messages = dict(self.ws_messages)
        in_progress = 0
        for conn in list(self.connections):
            route = getattr(conn, "route_label", None)
            if route is None:
                # An HTTP connection: counted as in progress while its handler runs.
                if getattr(conn, "task", None) is not None:
                    in_progress += 1
            elif getattr(conn, "counted", False):
                for direction, count in (("in", conn.received), ("out", conn.sent)):
                    if count:
                        messages[(route, direction)] = messages.get((route, direction), 0) + count
        data = {
            "v": SNAPSHOT_VERSION,
            "requests": [
                [m, r, code, n]
                for r, methods in self.routes.items()
                for m, st in methods.items()
                for code, n in st.statuses.items()
            ],
            "durations": [
                [m, r, st.durations.counts, st.durations.sum]
                for r, methods in self.routes.items()
                for m, st in methods.items()
                if st.timed
            ],
            "in_progress": in_progress,
            "ws_open": [[r, n] for r, n in self.ws_open.items()],
            "ws_total": [[r, n] for r, n in self.ws_total.items()],
            "ws_messages": [[r, d, n] for (r, d), n in messages.items()],
            "ws_closes": [[r, c, n] for (r, c), n in self.ws_closes.items()],
            "ping_rtt": [self.ping_rtt.counts, self.ping_rtt.sum],
        }
        hub = self.channels
        if hub is not None:
            data["channels"] = {
                "published": hub.published,
                "delivered": hub.delivered,
                "dropped": hub.dropped,
                "slow_closes": hub.slow_closes,
                "subscriptions": hub.subscriptions,
                "up": 1 if hub.up else 0,
            }
        return json.dumps(data, separators=(",", ":")).encode()
