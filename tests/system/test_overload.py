"""Overload: ``--limit-concurrency`` and ``--backlog`` on a real master.

System tier: ``python -m app_server`` with real workers, raw-socket clients
and the master's /metrics. A connection opened beyond ``--limit-concurrency``
(WebSockets count) gets one 503 with ``Connection: close`` as soon as its
request arrives, no handler runs, and the refusal is counted in
``app_server_http_requests_total``; the listen queue in force is the
master's ``--backlog``, which the worker must not replace when it starts
serving the inherited listener. Nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import re
import resource
import signal
import socket
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.system.harness import Master, poll
from tests.system.load import Connection, RequestError

APP = """\
import os

from app_server import App, text

app = App("overload")


@app.get("/")
async def index(request):
    return text(f"ok {os.getpid()}")


@app.websocket("/ws")
async def ws(request, ws):
    async for message in ws:
        await ws.send(message)
"""

ARGS = [
    "app:app",
    "--workers",
    "1",
    "--no-access-log",
    "--keep-alive-timeout",
    "60",
    "--graceful-timeout",
    "2",
]
MIB = 1 << 20
WS_HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.fixture
def open_files() -> Iterator[int]:
    """Room for 2,000 client sockets here and as many in the worker (it inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if wanted < 4500:
        pytest.skip(f"the open-files hard limit ({hard}) is below what 2,000 connections need")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield wanted
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def start(master, extra: list[str]) -> Master:  # type: ignore[no-untyped-def]
    m: Master = master([*ARGS, *extra], files={"app.py": APP})
    m.wait_log("all 1 workers ready", timeout=30)
    m.wait_workers(lambda pids: len(pids) == 1, timeout=10)
    return m


def refused_total(m: Master) -> float:
    """``app_server_http_requests_total`` with status 503, summed over its series."""
    text = httpx.get(m.metrics_url + "/metrics", timeout=10).text
    pattern = r'^app_server_http_requests_total\{[^}]*status="503"[^}]*\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def refused_at_once(conn: Connection) -> None:
    """One 503 with Connection: close, then the server's close."""
    status, headers, body = conn.get("/")
    assert status == 503, (status, body)
    assert headers.get("connection", "").lower() == "close"
    assert not conn.open  # closed by the client on seeing Connection: close


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def test_2000_connections_against_a_limit_of_500(master, open_files) -> None:  # type: ignore[no-untyped-def]
    m = start(master, ["--limit-concurrency", "500"])
    (worker,) = m.workers()
    peak = rss(worker)
    served: list[Connection] = []
    refused: list[Connection] = []
    try:
        for _ in range(500):
            conn = Connection(m.port, timeout=10)
            served.append(conn)
            status, _, body = conn.get("/")
            assert status == 200 and conn.open, (status, body)
        peak = max(peak, rss(worker))
        started = time.monotonic()
        for n in range(1500):
            conn = Connection(m.port, timeout=10)
            refused.append(conn)  # kept: the client holds all 2,000 sockets
            refused_at_once(conn)
            if n % 250 == 0:
                peak = max(peak, rss(worker))
        refusing_took = time.monotonic() - started
        # A WebSocket handshake beyond the limit gets the same 503.
        with socket.create_connection(("127.0.0.1", m.port), timeout=10) as sock:
            sock.sendall(WS_HANDSHAKE)
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        # The 500 served connections are still there and still served.
        for conn in served[:10]:
            assert conn.get("/")[0] == 200
        peak = max(peak, rss(worker))
    finally:
        for conn in served + refused:
            conn.close()
    print(
        f"\n2,000 connections, limit 500: 1,500 refused in {refusing_took:.2f}s, "
        f"worker RSS peak {peak / MIB:.1f} MiB"
    )
    assert peak < 100 * MIB, f"worker RSS reached {peak / MIB:.1f} MiB"
    # Normal service once they have left.
    poll(lambda: _get_ok(m.port), 10, "a 200 once the connections are closed")
    assert refused_total(m) == 1501  # 1,500 requests and the WebSocket handshake


def _get_ok(port: int) -> bool:
    try:
        conn = Connection(port, timeout=5)
    except RequestError:
        return False
    try:
        return conn.get("/", close=True)[0] == 200
    except RequestError:
        return False
    finally:
        conn.close()


def test_websockets_count_toward_the_limit(master) -> None:  # type: ignore[no-untyped-def]
    m = start(master, ["--limit-concurrency", "3"])
    with contextlib.ExitStack() as stack:
        sockets: list[ClientConnection] = []
        for _ in range(3):
            ws = stack.enter_context(ws_connect(f"ws://127.0.0.1:{m.port}/ws", open_timeout=10))
            sockets.append(ws)
            ws.send("hi")
            assert ws.recv(timeout=10) == "hi"
        conn = Connection(m.port, timeout=10)
        try:
            refused_at_once(conn)
        finally:
            conn.close()
        sockets[0].close()
        poll(lambda: _get_ok(m.port), 10, "a 200 once a WebSocket has closed")


def test_the_masters_backlog_is_the_queue_in_force(master) -> None:  # type: ignore[no-untyped-def]
    """With nobody accepting, Linux queues backlog + 1 connections, then drops
    SYNs: count the handshakes that complete."""
    backlog = 20
    m = start(master, ["--backlog", str(backlog)])
    (worker,) = m.workers()
    clients: list[socket.socket] = []
    os_kill_stop(worker)
    try:
        for _ in range(backlog + 50):
            sock = socket.socket()
            clients.append(sock)
            sock.settimeout(0.5)  # loopback answers a SYN at once unless the queue is full
            try:
                sock.connect(("127.0.0.1", m.port))
            except TimeoutError:
                break
        queued = len(clients) - 1
    finally:
        os_kill_cont(worker)
        for sock in clients:
            sock.close()
    assert queued == backlog + 1, f"{queued} connections queued with --backlog {backlog}"


def os_kill_stop(pid: int) -> None:
    import os

    os.kill(pid, signal.SIGSTOP)


def os_kill_cont(pid: int) -> None:
    import os

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
