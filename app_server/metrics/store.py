"""The master's view of every worker's metrics, and the Prometheus exposition.

Owns: ``MetricsStore``. Each live worker's latest snapshot is kept by pid;
when a worker ends, its counters and histograms are folded into ``retired``
(keyed by label values, so it grows with the label sets ever seen, never with
the number of workers) and its gauges are dropped at once. A counter is then
``retired + sum(live)``, monotonic across crashes, recycles, reloads and
scaling; a gauge is ``sum(live)``. Nothing is written to disk, so there are no
files to pile up and a scrape costs the same after a thousand restarts as
after one.

Also here: the master's own metrics (workers by state, the configured worker
count and the ``--max-memory`` limit that alerting rules compare them with, restarts by reason,
reloads by result, per-slot RSS and CPU with the CPU of a slot's past workers
carried over) and ``render()``, which builds the text format with
prometheus-client's own exposition (plus its standard ``process_*`` metrics
of the master).

Rule: imports nothing from the package but ``metrics.recorder``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.process_collector import ProcessCollector

from app_server.metrics.recorder import DURATION_BUCKETS, RTT_BUCKETS, SNAPSHOT_VERSION

log = logging.getLogger("app_server.error")
PREFIX = "app_server_"
RESTART_REASONS = (
    "crash",
    "timeout",
    "max_requests",
    "max_lifetime",
    "memory",
    "reload",
    "scale",
    "drain",
)
WORKER_STATES = ("starting", "ready", "stopping")
CHANNEL_DIRECTIONS = ("published", "delivered", "dropped")

Key = tuple[Any, ...]


class _Series:
    """Counters and histograms of one or many workers, added up by label values."""

    __slots__ = ("counters", "histograms")

    def __init__(self) -> None:
        self.counters: dict[str, dict[Key, float]] = {}
        self.histograms: dict[str, dict[Key, tuple[list[int], float]]] = {}

    def add_counter(self, name: str, key: Key, value: float) -> None:
        table = self.counters.setdefault(name, {})
        table[key] = table.get(key, 0) + value

    def add_histogram(self, name: str, key: Key, counts: list[int], total: float) -> None:
        table = self.histograms.setdefault(name, {})
        old = table.get(key)
        if old is None:
            table[key] = (list(counts), total)
        else:
            table[key] = ([a + b for a, b in zip(old[0], counts, strict=True)], old[1] + total)

    def add(self, other: _Series) -> None:
        for name, table in other.counters.items():
            for key, value in table.items():
                self.add_counter(name, key, value)
        for name, htable in other.histograms.items():
            for key, (counts, total) in htable.items():
                self.add_histogram(name, key, counts, total)


class _Snapshot:
    """One worker's parsed snapshot: its counters/histograms and its gauges."""

    __slots__ = ("series", "in_progress", "ws_open", "subscriptions", "channel_up")

    def __init__(self, data: dict[str, Any]) -> None:
        series = _Series()
        for method, route, status, n in data["requests"]:
            series.add_counter("http_requests", (method, route, str(status)), n)
        for method, route, counts, total in data["durations"]:
            series.add_histogram("http_duration", (method, route), counts, total)
        for route, n in data["ws_total"]:
            series.add_counter("ws_total", (route,), n)
        for route, direction, n in data["ws_messages"]:
            series.add_counter("ws_messages", (route, direction), n)
        for route, code, n in data["ws_closes"]:
            series.add_counter("ws_closes", (route, str(code)), n)
        counts, total = data["ping_rtt"]
        if any(counts):
            series.add_histogram("ping_rtt", (), counts, total)
        channels = data.get("channels")
        self.subscriptions = 0
        self.channel_up: int | None = None  # None: this worker runs no channel hub
        if channels is not None:
            for direction in CHANNEL_DIRECTIONS:
                series.add_counter("channel_messages", (direction,), int(channels[direction]))
            series.add_counter("channel_slow_closes", (), int(channels["slow_closes"]))
            self.subscriptions = int(channels["subscriptions"])
            self.channel_up = 1 if channels["up"] else 0
        self.series = series
        self.in_progress = int(data["in_progress"])
        self.ws_open = {route: n for route, n in data["ws_open"]}


class MetricsStore:
    def __init__(self, memory_limit_bytes: int = 0) -> None:
        self.live: dict[int, _Snapshot] = {}  # pid -> latest snapshot
        self.retired = _Series()
        self.restarts = dict.fromkeys(RESTART_REASONS, 0)
        self.reloads = {"ok": 0, "failed": 0}
        self.slot_cpu_retired: dict[int, float] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)  # the master's own process_* metrics
        self.registry.register(_Collector(self))
        self.workers: Any = None  # set by the master: a callable giving its view
        self.memory_limit_bytes = memory_limit_bytes  # --max-memory (0: no limit)

    # -- fed by the master ---------------------------------------------------------

    def update(self, pid: int, payload: bytes) -> None:
        try:
            data = json.loads(payload)
            if data.get("v") != SNAPSHOT_VERSION:
                raise ValueError(f"snapshot version {data.get('v')}")
            self.live[pid] = _Snapshot(data)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("worker %d sent unreadable metrics: %s", pid, exc)

    def worker_gone(self, pid: int, slot: int, cpu_seconds: float) -> None:
        """Fold the worker's counters into the retired totals; its gauges vanish."""
        snapshot = self.live.pop(pid, None)
        if snapshot is not None:
            self.retired.add(snapshot.series)
        self.slot_cpu_retired[slot] = self.slot_cpu_retired.get(slot, 0.0) + cpu_seconds

    def restarted(self, reason: str) -> None:
        self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def reloaded(self, ok: bool) -> None:
        self.reloads["ok" if ok else "failed"] += 1

    def size(self) -> int:
        """Entries held: bounded by label sets and live workers, not by history."""
        counters = sum(len(t) for t in self.retired.counters.values())
        histograms = sum(len(t) for t in self.retired.histograms.values())
        return counters + histograms + len(self.live) + len(self.slot_cpu_retired)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- aggregation ----------------------------------------------------------------

    def totals(self) -> tuple[_Series, int, dict[str, int]]:
        total = _Series()
        total.add(self.retired)
        in_progress = 0
        ws_open: dict[str, int] = {}
        for snapshot in self.live.values():
            total.add(snapshot.series)
            in_progress += snapshot.in_progress
            for route, n in snapshot.ws_open.items():
                ws_open[route] = ws_open.get(route, 0) + n
        return total, in_progress, ws_open


class _Collector:
    """Builds every metric family at scrape time from the store and the master."""

    def __init__(self, store: MetricsStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        store = self.store
        series, in_progress, ws_open = store.totals()
        yield _counter(
            "http_requests_total",
            "HTTP requests answered.",
            ("method", "route", "status"),
            series.counters.get("http_requests"),
        )
        yield _histogram(
            "http_request_duration_seconds",
            "Time from the handler's start to the response's last byte.",
            ("method", "route"),
            DURATION_BUCKETS,
            series.histograms.get("http_duration", {}),
        )
        yield GaugeMetricFamily(
            PREFIX + "http_requests_in_progress",
            "HTTP requests being handled now.",
            value=in_progress,
        )
        gauge = GaugeMetricFamily(
            PREFIX + "websocket_connections", "WebSocket connections open now.", labels=("route",)
        )
        for route, n in sorted(ws_open.items()):
            if n:
                gauge.add_metric((route,), n)
        yield gauge
        yield _counter(
            "websocket_connections_total",
            "WebSocket connections accepted.",
            ("route",),
            series.counters.get("ws_total"),
        )
        yield _counter(
            "websocket_messages_total",
            "WebSocket messages received and sent.",
            ("route", "direction"),
            series.counters.get("ws_messages"),
        )
        yield _counter(
            "websocket_closes_total",
            "WebSocket connections closed, by code.",
            ("route", "code"),
            series.counters.get("ws_closes"),
        )
        yield _histogram(
            "websocket_ping_rtt_seconds",
            "Round-trip time of answered pings.",
            (),
            RTT_BUCKETS,
            series.histograms.get("ping_rtt", {}),
        )
        view = store.workers() if store.workers is not None else None
        yield from _channel_metrics(store, series, view.relay_dropped if view else 0)
        states = dict.fromkeys(WORKER_STATES, 0)
        slots: list[tuple[int, int, float]] = []  # slot, rss, cpu of its current worker
        desired = 0
        if view is not None:
            desired = view.desired
            for state, count in view.states.items():
                states[state] = states.get(state, 0) + count
            slots = view.slots
        workers = GaugeMetricFamily(
            PREFIX + "workers", "Worker processes by state.", labels=("state",)
        )
        for state, count in states.items():
            workers.add_metric((state,), count)
        yield workers
        yield GaugeMetricFamily(
            PREFIX + "workers_desired",
            "Worker processes the master keeps (--workers, scaling).",
            value=desired,
        )
        yield GaugeMetricFamily(
            PREFIX + "worker_memory_limit_bytes",
            "RSS above which a worker is recycled (--max-memory; 0: none).",
            value=store.memory_limit_bytes,
        )
        restarts = CounterMetricFamily(
            PREFIX + "worker_restarts", "Workers replaced, by reason.", labels=("reason",)
        )
        for reason, count in store.restarts.items():
            restarts.add_metric((reason,), count)
        yield restarts
        reloads = CounterMetricFamily(
            PREFIX + "reloads", "Rolling reloads, by result.", labels=("result",)
        )
        for result, count in store.reloads.items():
            reloads.add_metric((result,), count)
        yield reloads
        rss = GaugeMetricFamily(
            PREFIX + "worker_resident_memory_bytes",
            "Resident memory of each slot's worker.",
            labels=("slot",),
        )
        cpu = CounterMetricFamily(
            PREFIX + "worker_cpu_seconds",
            "CPU time of each slot's workers, past ones included.",
            labels=("slot",),
        )
        seen: set[int] = set()
        for slot, resident, seconds in slots:
            seen.add(slot)
            rss.add_metric((str(slot),), resident)
            cpu.add_metric((str(slot),), store.slot_cpu_retired.get(slot, 0.0) + seconds)
        for slot, seconds in sorted(store.slot_cpu_retired.items()):
            if slot not in seen:
                cpu.add_metric((str(slot),), seconds)
        yield rss
        yield cpu


def _channel_metrics(store: MetricsStore, series: _Series, relay_dropped: int) -> Iterator[Metric]:
    """SPEC §9: shown from the start (zeros), summed over workers; topics are no label.

    ``dropped`` adds the master relay's drops (deliveries to a worker that fell
    behind) to the workers' own (messages not written to a slow subscriber).
    """
    messages = {(d,): 0.0 for d in CHANNEL_DIRECTIONS}
    messages.update(series.counters.get("channel_messages", {}))
    messages[("dropped",)] += relay_dropped
    yield _counter(
        "channel_messages_total",
        "Channel messages published, delivered to subscribers, and dropped.",
        ("direction",),
        messages,
    )
    yield _counter(
        "channel_slow_closes_total",
        "Subscribers closed with 1013 for passing WEBSOCKET_MAX_SEND_BUFFER.",
        (),
        {(): series.counters.get("channel_slow_closes", {}).get((), 0.0)},
    )
    live = [s for s in store.live.values() if s.channel_up is not None]
    yield GaugeMetricFamily(
        PREFIX + "channel_subscriptions",
        "Channel subscriptions (WebSockets and handlers) now.",
        value=sum(s.subscriptions for s in live),
    )
    # 1 while every worker's backend is reachable (and at least one reports).
    up = 1 if live and all(s.channel_up for s in live) else 0
    yield GaugeMetricFamily(
        PREFIX + "channel_backend_up",
        "1 while the channel backend is reachable from every worker.",
        value=up,
    )


def _counter(
    name: str, doc: str, labels: tuple[str, ...], table: dict[Key, float] | None
) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name.removesuffix("_total"), doc, labels=labels)
    for key, value in sorted((table or {}).items()):
        family.add_metric(key, value)
    return family


def _histogram(
    name: str,
    doc: str,
    labels: tuple[str, ...],
    bounds: tuple[float, ...],
    table: dict[Key, tuple[list[int], float]],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(PREFIX + name, doc, labels=labels)
    for key, (counts, total) in sorted(table.items()):
        cumulative = 0
        buckets = []
        for bound, count in zip((*bounds, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append((_le(bound), cumulative))
        family.add_metric(list(key), buckets, total)
    return family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))
