"""Metrics, health and readiness of a real master (SPEC §7, issue 5).

A real master with real workers (``--workers 2``) serves an app written by
the test; the test drives a known number of HTTP requests and WebSocket
connections and messages, scrapes ``/metrics`` and parses it with
prometheus-client's own text parser, and checks exact values: through a
rolling reload, a killed worker and 200 recycles (counters stay monotonic
and exact, a dead worker's gauges vanish at once, the set of series and the
scrape's size stay the same). Every wait is a poll with a deadline; nothing
sleeps to synchronise. Figures (scrape times, recycle rate) are printed (run
with ``-s`` to see them).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.system.harness import Master, poll

APP = """
import asyncio
import os
from pathlib import Path

from app_server import App, json, text

app = App("metrics")


@app.get("/")
async def index(request):
    return text(str(os.getpid()))


@app.get("/items/<item_id:int>")
async def item(request, item_id: int):
    return json({"id": item_id})


@app.post("/echo")
async def echo(request):
    return text(request.text)


@app.get("/hold/<flag>")
async def hold(request, flag: str):
    # Held until the test creates FLAG.flag (bounded: 30 s at most).
    print("hold-start", flag, os.getpid(), flush=True)
    path = Path(flag + ".flag")
    for _ in range(1500):
        if path.exists():
            break
        await asyncio.sleep(0.02)
    return text("released " + flag)


@app.websocket("/ws")
async def ws(request, ws):
    await ws.send(str(os.getpid()))
    while True:
        message = await ws.recv()
        await ws.send(message)


@app.websocket("/ws-close")
async def ws_close(request, ws):
    await ws.recv()
    await ws.close(4001, "custom")
"""

ITEMS = "/items/{item_id:int}"  # the template as the router normalises <item_id:int>
UNMATCHED = "<unmatched>"
DURATION_LE = (
    "0.005",
    "0.01",
    "0.025",
    "0.05",
    "0.075",
    "0.1",
    "0.25",
    "0.5",
    "0.75",
    "1.0",
    "2.5",
    "5.0",
    "7.5",
    "10.0",
    "+Inf",
)
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
# Counters that move on their own (CPU) or are checked separately (restarts, reloads).
MOVING = (
    "app_server_worker_cpu_seconds_total",
    "app_server_worker_restarts_total",
    "app_server_reloads_total",
)

StartMaster = Callable[..., Master]
Labels = tuple[tuple[str, str], ...]

# One client for the whole module: ``httpx.get`` builds a new client (and TLS
# context) per call, tens of milliseconds that would swamp the scrape times.
# Every request still opens a new connection (``Connection: close``).
HTTP = httpx.Client(timeout=10, headers={"Connection": "close"})


@pytest.fixture(scope="module", autouse=True)
def _close_http() -> Any:
    yield
    HTTP.close()


# -- scraping -------------------------------------------------------------------------


class Scrape:
    """One /metrics answer, parsed by prometheus-client's own text parser."""

    def __init__(self, body: bytes, seconds: float) -> None:
        self.body = body
        self.seconds = seconds
        self.samples: dict[tuple[str, Labels], float] = {}
        self.kinds: dict[str, str] = {}  # sample name -> family type
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                assert key not in self.samples, f"duplicate sample {key}"
                self.samples[key] = sample.value
                self.kinds[sample.name] = family.type

    def series(self, name: str) -> dict[Labels, float]:
        return {labels: v for (n, labels), v in self.samples.items() if n == name}

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def total(self, name: str) -> float:
        return sum(self.series(name).values())

    def counters(self) -> dict[tuple[str, Labels], float]:
        """Every app_server_ counter and histogram sample but the moving ones."""
        return {
            key: v
            for key, v in self.samples.items()
            if key[0].startswith("app_server_")
            and key[0] not in MOVING
            and self.kinds[key[0]] in ("counter", "histogram")
        }

    def shape(self) -> set[tuple[str, Labels]]:
        """The set of series (name and labels), the master's process_* metrics aside."""
        return {key for key in self.samples if not key[0].startswith("process_")}


def scrape(m: Master) -> Scrape:
    started = time.perf_counter()
    response = HTTP.get(m.metrics_url + "/metrics")
    seconds = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.content, seconds)


def assert_counters_equal(before: Scrape, after: Scrape, what: str) -> None:
    a, b = before.counters(), after.counters()
    assert a.keys() == b.keys(), f"{what}: series differ: {a.keys() ^ b.keys()}"
    for key, value in a.items():
        if key[0].endswith("_sum"):  # float sums: added up in another order
            assert math.isclose(b[key], value, rel_tol=1e-9, abs_tol=1e-12), (what, key)
        else:
            assert b[key] == value, f"{what}: {key}: {value} -> {b[key]}"


def assert_cpu_monotonic(*scrapes: Scrape) -> None:
    for earlier, later in itertools.pairwise(scrapes):
        for labels, seconds in earlier.series("app_server_worker_cpu_seconds_total").items():
            now = later.series("app_server_worker_cpu_seconds_total").get(labels)
            assert now is not None and now >= seconds, (labels, seconds, now)


def requests_total(s: Scrape) -> dict[tuple[str, str, str], float]:
    return {
        (d["method"], d["route"], d["status"]): v
        for d, v in (
            (dict(labels), v) for labels, v in s.series("app_server_http_requests_total").items()
        )
    }


# -- the app's clients ----------------------------------------------------------------


def _start(master: StartMaster, args: list[str]) -> Master:
    return master([*args, "app:app"], files={"app.py": APP})


def _status(url: str) -> int | None:
    try:
        return HTTP.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


def wait_ready(m: Master, timeout: float = 30) -> None:
    def ready() -> bool:
        m.check_alive()
        return _status(m.metrics_url + "/readyz") == 200

    poll(ready, timeout, f"/readyz 200; log:\n{m.log()[-3000:]}")


def get(m: Master, path: str) -> httpx.Response:
    """One request on a new connection (so the kernel picks a worker every time)."""
    return HTTP.get(m.url + path)


def post(m: Master, path: str, body: str) -> httpx.Response:
    return HTTP.post(m.url + path, content=body)


def ws_url(m: Master, path: str) -> str:
    return f"ws://127.0.0.1:{m.port}{path}"


def open_ws(m: Master) -> tuple[ClientConnection, int]:
    """A /ws connection and the pid of the worker holding it (its first message)."""
    conn = ws_connect(ws_url(m, "/ws"), open_timeout=10, close_timeout=10, legacy=True)
    return conn, int(conn.recv(timeout=10))


def echo_ws(m: Master, messages: int) -> None:
    """A /ws session: the pid, ``messages`` echoed, a normal close (1000)."""
    conn, _ = open_ws(m)
    with conn:
        for i in range(messages):
            conn.send(f"m{i}")
            assert conn.recv(timeout=10) == f"m{i}"


def custom_close_ws(m: Master) -> None:
    """A /ws-close session: one message in, then the server closes with 4001."""
    with ws_connect(ws_url(m, "/ws-close"), open_timeout=10, close_timeout=10) as conn:
        conn.send("bye")
        with pytest.raises(ConnectionClosed) as closed:
            conn.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001


class Held:
    """A GET /hold/<flag> running in a thread until the test creates the flag file."""

    def __init__(self, m: Master, flag: str) -> None:
        self.m, self.flag = m, flag
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.response = get(self.m, f"/hold/{self.flag}")
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def release(self) -> None:
        (self.m.cwd / f"{self.flag}.flag").write_text("go")

    def finish(self, timeout: float = 30) -> httpx.Response:
        self.release()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the held request did not finish"
        assert self.error is None, self.error
        assert self.response is not None
        return self.response


def assert_histograms_match(s: Scrape) -> None:
    """Per (method, route): _count == requests, cumulative buckets ending at +Inf == count."""
    per_route: Counter[tuple[str, str]] = Counter()
    for (method, route, _status), n in requests_total(s).items():
        per_route[(method, route)] += int(n)
    counts = {
        (dict(k)["method"], dict(k)["route"]): v
        for k, v in s.series("app_server_http_request_duration_seconds_count").items()
    }
    assert counts == per_route
    buckets: dict[tuple[str, str], dict[str, float]] = {}
    for labels, v in s.series("app_server_http_request_duration_seconds_bucket").items():
        d = dict(labels)
        buckets.setdefault((d["method"], d["route"]), {})[d["le"]] = v
    assert buckets.keys() == per_route.keys()
    for key, by_le in buckets.items():
        assert set(by_le) == set(DURATION_LE), by_le
        values = [by_le[le] for le in DURATION_LE]
        assert values == sorted(values), f"{key}: buckets not cumulative: {values}"
        assert values[-1] == per_route[key]
        method, route = key
        total = s.value("app_server_http_request_duration_seconds_sum", method=method, route=route)
        assert total is not None and total > 0


# -- 1. exact counts ------------------------------------------------------------------


def test_exact_counts_of_every_metric(master: StartMaster) -> None:
    m = _start(master, ["--workers", "2", "--ws-ping-interval", "0.2"])
    wait_ready(m)

    idle = scrape(m)
    assert requests_total(idle) == {}
    assert idle.value("app_server_http_requests_in_progress") == 0
    assert idle.series("app_server_websocket_connections") == {}

    pids: Counter[int] = Counter()
    for _ in range(40):
        response = get(m, "/")
        assert response.status_code == 200
        pids[int(response.text)] += 1
    assert set(pids) == set(m.workers()) and len(pids) == 2, pids  # both workers served
    for i in range(15):
        assert get(m, f"/items/{i}").json() == {"id": i}
    for i in range(10):
        response = post(m, "/echo", f"body {i}")
        assert response.status_code == 200 and response.text == f"body {i}"
    for i in range(5):
        assert get(m, f"/nope/{i}").status_code == 404
    for _ in range(3):
        assert get(m, "/items/abc").status_code == 404  # the int converter does not match
    for messages in (2, 3, 4):
        echo_ws(m, messages)  # /ws: in 9, out 9 + 3 pids, three closes 1000
    for _ in range(2):
        custom_close_ws(m)  # /ws-close: in 2, out 0, two closes 4001
    held = [open_ws(m)[0] for _ in range(2)]  # open at scrape time
    for conn in held:
        conn.send("held")
        assert conn.recv(timeout=10) == "held"  # in 2, out 2 + 2 pids

    s = scrape(m)
    assert requests_total(s) == {
        ("GET", "/", "200"): 40,
        ("GET", ITEMS, "200"): 15,
        ("POST", "/echo", "200"): 10,
        ("GET", UNMATCHED, "404"): 8,
        ("GET", "/ws", "101"): 5,
        ("GET", "/ws-close", "101"): 2,
    }
    assert_histograms_match(s)
    assert s.series("app_server_websocket_connections_total") == {
        (("route", "/ws"),): 5,
        (("route", "/ws-close"),): 2,
    }
    assert s.series("app_server_websocket_messages_total") == {
        (("direction", "in"), ("route", "/ws")): 9 + 2,
        (("direction", "out"), ("route", "/ws")): 9 + 3 + 2 + 2,
        (("direction", "in"), ("route", "/ws-close")): 2,
    }
    assert s.series("app_server_websocket_closes_total") == {
        (("code", "1000"), ("route", "/ws")): 3,
        (("code", "4001"), ("route", "/ws-close")): 2,
    }
    assert s.series("app_server_websocket_connections") == {(("route", "/ws"),): 2}
    assert s.value("app_server_http_requests_in_progress") == 0
    assert s.series("app_server_workers") == {
        (("state", "ready"),): 2,
        (("state", "starting"),): 0,
        (("state", "stopping"),): 0,
    }
    rss = s.series("app_server_worker_resident_memory_bytes")
    assert set(rss) == {(("slot", "0"),), (("slot", "1"),)} and all(v > 0 for v in rss.values())
    cpu = s.series("app_server_worker_cpu_seconds_total")
    assert set(cpu) == {(("slot", "0"),), (("slot", "1"),)} and all(v >= 0 for v in cpu.values())
    assert s.kinds["app_server_worker_cpu_seconds_total"] == "counter"
    assert s.series("app_server_worker_restarts_total") == {
        (("reason", r),): 0 for r in RESTART_REASONS
    }
    assert s.series("app_server_reloads_total") == {
        (("result", "ok"),): 0,
        (("result", "failed"),): 0,
    }
    assert (s.value("process_resident_memory_bytes") or 0) > 0  # the master's own
    assert s.value("process_cpu_seconds_total") is not None
    assert (s.value("process_open_fds") or 0) > 0

    # The server pings the held connections every 0.2 s; the client answers.
    pinged = poll(
        lambda: (x := scrape(m)).value("app_server_websocket_ping_rtt_seconds_count") and x,
        10,
        "a ping round trip recorded",
    )
    rtt_count = pinged.value("app_server_websocket_ping_rtt_seconds_count")
    assert pinged.value("app_server_websocket_ping_rtt_seconds_bucket", le="+Inf") == rtt_count
    assert pinged.kinds["app_server_websocket_ping_rtt_seconds_count"] == "histogram"

    # A request in flight is counted while it runs, and once it is answered.
    hold = Held(m, "inflight")
    busy = poll(
        lambda: (x := scrape(m)).value("app_server_http_requests_in_progress") and x,
        15,
        "a request in progress",
    )
    assert busy.value("app_server_http_requests_in_progress") == 1
    assert ("GET", "/hold/{flag}", "200") not in requests_total(busy)
    assert hold.finish().text == "released inflight"
    for conn in held:
        conn.close()

    s = scrape(m)
    assert s.value("app_server_http_requests_in_progress") == 0
    assert requests_total(s)[("GET", "/hold/{flag}", "200")] == 1
    assert s.series("app_server_websocket_connections") == {}  # no connection open
    assert s.series("app_server_websocket_closes_total")[(("code", "1000"), ("route", "/ws"))] == 5
    assert s.total("app_server_http_requests_total") == 40 + 15 + 10 + 8 + 5 + 2 + 1
    assert_histograms_match(s)


# -- 2. churn: reload and a killed worker ----------------------------------------------


def test_counters_stay_exact_through_reload_and_crash(master: StartMaster) -> None:
    m = _start(master, ["--workers", "2"])
    wait_ready(m)
    for _ in range(20):
        assert get(m, "/").status_code == 200
    for i in range(5):
        assert get(m, f"/items/{i}").status_code == 200
    for i in range(3):
        assert get(m, f"/nope/{i}").status_code == 404
    echo_ws(m, 2)
    echo_ws(m, 3)
    custom_close_ws(m)

    a = scrape(m)
    assert requests_total(a)[("GET", "/", "200")] == 20
    old = set(m.workers())
    m.signal(signal.SIGHUP)
    m.wait_log("reload complete")
    b = scrape(m)
    assert_counters_equal(a, b, "across the reload")
    assert b.series("app_server_reloads_total") == {
        (("result", "ok"),): 1,
        (("result", "failed"),): 0,
    }
    restarts = {
        dict(k)["reason"]: v for k, v in b.series("app_server_worker_restarts_total").items()
    }
    assert restarts == {**dict.fromkeys(RESTART_REASONS, 0), "reload": 2}

    # Once the old workers are gone (their counts folded into the retired totals).
    m.wait_workers(lambda pids: len(pids) == 2 and not set(pids) & old)
    c = poll(
        lambda: (
            (x := scrape(m)).value("app_server_workers", state="stopping") == 0
            and x.value("app_server_workers", state="ready") == 2
            and x
        ),
        15,
        "the old workers reaped",
    )
    assert_counters_equal(a, c, "after the old workers exited")

    victim = m.workers()[0]
    os.kill(victim, signal.SIGKILL)  # c was a fresh snapshot: the victim's counts are known
    m.wait_workers(lambda pids: len(pids) == 2 and victim not in pids)
    d = poll(
        lambda: (
            (x := scrape(m)).value("app_server_workers", state="ready") == 2
            and x.value("app_server_worker_restarts_total", reason="crash") == 1
            and x
        ),
        15,
        "the replacement of the killed worker ready",
    )
    assert_counters_equal(c, d, "after a worker was killed")
    restarts = {
        dict(k)["reason"]: v for k, v in d.series("app_server_worker_restarts_total").items()
    }
    assert restarts == {**dict.fromkeys(RESTART_REASONS, 0), "reload": 2, "crash": 1}
    assert d.value("app_server_reloads_total", result="ok") == 1

    # More traffic: the new counts add up exactly to the old ones.
    for _ in range(10):
        assert get(m, "/").status_code == 200
    for i in range(4):
        assert post(m, "/echo", str(i)).text == str(i)
    echo_ws(m, 1)
    e = scrape(m)
    expected = dict(requests_total(d))
    for key, n in (
        (("GET", "/", "200"), 10),
        (("POST", "/echo", "200"), 4),
        (("GET", "/ws", "101"), 1),
    ):
        expected[key] = expected.get(key, 0) + n
    assert requests_total(e) == expected
    assert_histograms_match(e)
    assert e.value("app_server_websocket_connections_total", route="/ws") == 3
    assert e.value("app_server_websocket_messages_total", route="/ws", direction="in") == 2 + 3 + 1
    assert e.value("app_server_websocket_messages_total", route="/ws", direction="out") == 9
    assert e.value("app_server_websocket_closes_total", route="/ws", code="1000") == 3
    assert e.value("app_server_websocket_closes_total", route="/ws-close", code="4001") == 1
    assert_cpu_monotonic(a, b, c, d, e)


# -- 3. a dead worker's gauges ---------------------------------------------------------


def test_dead_workers_gauges_vanish_at_once(master: StartMaster) -> None:
    m = _start(master, ["--workers", "2"])
    wait_ready(m)
    conns: list[tuple[ClientConnection, int]] = []
    try:
        # Open connections until both workers hold some (new connections spread).
        def both_hold() -> bool:
            conns.append(open_ws(m))
            return len(conns) >= 6 and len({pid for _, pid in conns}) == 2

        poll(both_hold, 20, "WebSockets on both workers", interval=0)
        held = Counter(pid for _, pid in conns)
        before = scrape(m)  # also a fresh snapshot of each worker
        assert before.value("app_server_websocket_connections", route="/ws") == len(conns)
        assert before.value("app_server_websocket_connections_total", route="/ws") == len(conns)

        victim = conns[0][1]
        os.kill(victim, signal.SIGKILL)
        poll(lambda: not psutil.pid_exists(victim), 10, "the victim reaped by the master")
        after = scrape(m)  # the first scrape after the reap
        survivors = len(conns) - held[victim]
        assert after.total("app_server_websocket_connections") == survivors, held
        # The counter keeps what the dead worker counted; nothing was closed cleanly.
        assert after.value("app_server_websocket_connections_total", route="/ws") == len(conns)
        assert after.series("app_server_websocket_closes_total") == {}
        # And it stays so once the replacement is serving.
        m.wait_workers(lambda pids: len(pids) == 2 and victim not in pids)
        wait_ready(m)
        assert scrape(m).total("app_server_websocket_connections") == survivors
    finally:
        for conn, _ in conns:
            conn.close()


# -- 4. bounded cardinality ------------------------------------------------------------


def test_unmatched_paths_share_one_label(master: StartMaster) -> None:
    m = _start(master, ["--workers", "2"])
    wait_ready(m)
    with httpx.Client(base_url=m.url, timeout=10) as client:
        for i in range(1000):
            assert client.get(f"/nope/{i}").status_code == 404
    s = scrape(m)
    not_found = {
        labels: v
        for labels, v in s.series("app_server_http_requests_total").items()
        if dict(labels)["status"] == "404"
    }
    assert not_found == {(("method", "GET"), ("route", UNMATCHED), ("status", "404")): 1000}
    routes = {
        dict(labels)["route"]
        for labels in s.series("app_server_http_request_duration_seconds_count")
    }
    assert routes == {UNMATCHED}
    assert b"/nope/" not in s.body
    assert_histograms_match(s)


# -- 5. health and readiness -----------------------------------------------------------


def test_readyz_flips_to_503_when_shutdown_starts(master: StartMaster) -> None:
    m = _start(master, ["--workers", "2", "--graceful-timeout", "30"])
    wait_ready(m)
    assert _status(m.metrics_url + "/healthz") == 200
    assert _status(m.metrics_url + "/readyz") == 200
    assert _status(m.metrics_url + "/nothing") == 404

    hold = Held(m, "drain")
    m.wait_log("hold-start drain")
    m.signal(signal.SIGTERM)
    poll(lambda: _status(m.metrics_url + "/readyz") == 503, 5, "/readyz 503 during the drain")
    health = _status(m.metrics_url + "/healthz")
    assert m.process.poll() is None, "the master must still be draining"
    print(f"\n/healthz during the drain: {health}")
    assert hold.finish().text == "released drain"  # the in-flight request completes
    assert m.wait_exit(30) == 0


# -- 6. bounded storage under churn ----------------------------------------------------

CHURN_TARGET = 200
CHURN_BUDGET_S = 60.0


def test_storage_stays_bounded_after_many_replacements(master: StartMaster) -> None:
    m = _start(master, ["--workers", "2", "--preload", "--max-requests", "1", "--timeout", "0.4"])
    wait_ready(m)
    answered: Counter[int] = Counter()  # status -> responses received
    failed: Counter[str] = Counter()  # exception -> requests that got no answer
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                answered[get(m, "/").status_code] += 1
            except httpx.HTTPError as exc:
                failed[f"{type(exc).__name__}: {exc}"] += 1

    # A first few requests, so that the series exist, then the reference scrape.
    for _ in range(4):
        answered[get(m, "/").status_code] += 1
    first = [scrape(m) for _ in range(5)]
    fresh = first[-1]
    fresh_time = statistics.median(s.seconds for s in first)

    def recycled(s: Scrape) -> float:
        return s.value("app_server_worker_restarts_total", reason="max_requests") or 0

    thread = threading.Thread(target=client, daemon=True)
    started = time.monotonic()
    thread.start()
    try:

        def reached() -> bool:
            m.check_alive()
            return recycled(scrape(m)) >= CHURN_TARGET

        try:
            poll(reached, CHURN_BUDGET_S, "recycles", interval=0.5)
        except TimeoutError:
            pass  # reported below: the rate this machine manages
    finally:
        stop.set()
        thread.join(30)
    took = time.monotonic() - started
    assert not thread.is_alive()

    # Settle: no worker starting or stopping, so that the series are comparable.
    def settled() -> Scrape | None:
        s = scrape(m)
        states = {dict(k)["state"]: v for k, v in s.series("app_server_workers").items()}
        return s if states == {"ready": 2, "starting": 0, "stopping": 0} else None

    poll(settled, 30, "no worker starting or stopping")
    last = [scrape(m) for _ in range(5)]
    after = last[-1]
    after_time = statistics.median(s.seconds for s in last)
    replacements = recycled(after)
    restarts = {
        dict(k)["reason"]: int(v)
        for k, v in after.series("app_server_worker_restarts_total").items()
    }
    print(
        f"\nchurn: {int(replacements)} max_requests recycles in {took:.1f}s "
        f"({replacements / took:.1f}/s); restarts {restarts}; client {dict(answered)}, "
        f"failed {dict(failed)}\nscrape: {fresh_time * 1000:.1f} ms fresh, "
        f"{after_time * 1000:.1f} ms after churn; body {len(fresh.body)} -> "
        f"{len(after.body)} bytes; {len(fresh.samples)} -> {len(after.samples)} samples; "
        f"master fds {fresh.value('process_open_fds')} -> {after.value('process_open_fds')}, "
        f"RSS {fresh.value('process_resident_memory_bytes')} -> "
        f"{after.value('process_resident_memory_bytes')}"
    )
    assert replacements >= min(CHURN_TARGET, 50), "far too few recycles to prove anything"

    # The counts are exact through every replacement (a worker killed for a
    # missed heartbeat, on a loaded machine, takes what it counted since its
    # last snapshot with it; a request that failed may have been counted)...
    counted = requests_total(after)
    assert set(counted) == {("GET", "/", "200")}
    served = counted[("GET", "/", "200")]
    assert served >= answered[200] or restarts["timeout"] or restarts["crash"]
    assert served <= answered[200] + failed.total()
    if restarts["timeout"] == restarts["crash"] == failed.total() == 0:
        assert served == answered[200] == answered.total()
    assert_histograms_match(after)
    # ...and the store holds the same series as after the first requests.
    assert after.shape() == fresh.shape()
    assert len(after.samples) == len(fresh.samples)
    assert len(after.body) <= len(fresh.body) * 1.10
    assert (after.value("process_open_fds") or 0) <= (fresh.value("process_open_fds") or 0) + 2


# -- the chat example under the master ---------------------------------------------------------


def test_chat_example_metrics(master: StartMaster) -> None:
    """examples/ws_chat_rooms.py as deployed: its WebSocket and HTTP routes in /metrics."""
    root = Path(__file__).resolve().parents[2]
    m = master(["--app-dir", str(root), "--workers", "1", "examples.ws_chat_rooms:app"])
    wait_ready(m)
    url = f"ws://127.0.0.1:{m.port}/ws/chat/lobby"
    with ws_connect(url) as ann:
        assert json.loads(ann.recv())["type"] == "system"  # welcome: 1 out
        with ws_connect(url) as bob:
            assert json.loads(bob.recv())["type"] == "system"  # welcome: 1 out
            assert json.loads(ann.recv())["type"] == "user_joined"  # to ann: 1 out
            ann.send(json.dumps({"type": "chat", "message": "hi", "user": "ann"}))  # 1 in
            for client in (ann, bob):  # broadcast: 2 out
                assert json.loads(client.recv())["message"] == "hi"
            rooms = HTTP.get(f"{m.url}/api/rooms").json()
            assert rooms == {"rooms": ["lobby"], "total_clients": 2}
        assert json.loads(ann.recv())["type"] == "user_left"  # bob left: 1 out to ann

    def closed() -> Scrape | None:
        s = scrape(m)
        return s if s.total("app_server_websocket_closes_total") == 2 else None

    s = poll(closed, 10, "both closes counted")
    chat = "/ws/chat/{room_id}"
    assert s.value("app_server_websocket_connections_total", route=chat) == 2
    assert s.value("app_server_websocket_messages_total", route=chat, direction="in") == 1
    assert s.value("app_server_websocket_messages_total", route=chat, direction="out") == 6
    assert s.value("app_server_websocket_closes_total", route=chat, code="1000") == 2
    assert s.total("app_server_websocket_connections") == 0
    assert s.value("app_server_http_requests_total", method="GET", route=chat, status="101") == 2
    assert (
        s.value("app_server_http_requests_total", method="GET", route="/api/rooms", status="200")
        == 1
    )


def test_desired_workers_and_memory_limit_follow_the_settings_and_scaling(
    master: StartMaster,
) -> None:
    """The gauges the alerting rules compare with (config/app-server-alerts.yml)."""
    m = _start(master, ["--workers", "2", "--max-memory", "512"])
    wait_ready(m)
    s = scrape(m)
    assert s.value("app_server_workers_desired") == 2
    assert s.value("app_server_worker_memory_limit_bytes") == 512 * 1024 * 1024
    assert s.kinds["app_server_workers_desired"] == "gauge"
    assert s.kinds["app_server_worker_memory_limit_bytes"] == "gauge"
    m.signal(signal.SIGTTIN)
    poll(lambda: scrape(m).value("app_server_workers_desired") == 3, 30, "desired 3 after TTIN")
    poll(lambda: scrape(m).value("app_server_workers", state="ready") == 3, 30, "3 ready")
    m.signal(signal.SIGTTOU)
    poll(lambda: scrape(m).value("app_server_workers_desired") == 2, 30, "desired 2 after TTOU")

    unlimited = _start(master, ["--workers", "1"])
    wait_ready(unlimited)
    s = scrape(unlimited)
    assert s.value("app_server_workers_desired") == 1
    assert s.value("app_server_worker_memory_limit_bytes") == 0
