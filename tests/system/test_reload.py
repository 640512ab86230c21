"""Rolling reload, scaling and recycling under steady load: zero failed requests.

System tier: a real master (``python -m app_server``), real workers, real
signals and a real client (``tests.system.load``) that counts every error.
Nothing sleeps to synchronise: each step waits for a log line or for the set
of worker pids with a deadline.

The app answers ``"<version> <pid>"``; the version is read from
``version.txt`` when the module is imported (in each worker, after the fork),
so a test rewrites that file before a HUP and then checks which code serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.system.harness import Master, clean_env, free_port, poll
from tests.system.load import Connection, Load, RequestError

APP = """\
import os
from pathlib import Path

from app_server import App, text

VERSION = (Path(__file__).parent / "version.txt").read_text().strip()
app = App("reload")


@app.get("/")
async def index(request):
    return text(f"{VERSION} {os.getpid()}")


@app.websocket("/ws")
async def ws(request, ws):
    await ws.send(f"{VERSION} {os.getpid()}")
    async for message in ws:
        await ws.send(message)
"""

BROKEN_APP = 'raise RuntimeError("this release is broken on purpose")\n'

BASE_ARGS = ["app:app", "--graceful-timeout", "5", "--timeout", "10", "--no-access-log"]
RELOAD_TOOK = re.compile(r"reload complete: (\d+) workers replaced in ([\d.]+)s")


def start(
    master, tmp_path: Path, version: str = "v0", workers: int = 2, extra: tuple[str, ...] = ()
) -> Master:
    (tmp_path / "version.txt").write_text(version + "\n")
    # No bytecode cache: a module rewritten within the same second with the
    # same size must never be served from a stale .pyc.
    m: Master = master(
        [*BASE_ARGS, "--workers", str(workers), *extra],
        files={"app.py": APP},
        env=clean_env(PYTHONDONTWRITEBYTECODE="1"),
    )
    m.wait_log(f"all {workers} workers ready", timeout=30)
    m.wait_workers(lambda pids: len(pids) == workers, timeout=10)
    return m


def served_by(responses) -> Counter[int]:
    return Counter(r.pid for r in responses)


def reload_times(log: str) -> list[float]:
    return [float(t) for _, t in RELOAD_TOOK.findall(log)]


# -- the load client itself -------------------------------------------------------------


def test_load_client_counts_refused_and_eof_on_a_reused_connection():
    """The client is not blind: no listener is 'refused'; a reused connection
    closed before any response byte is 'eof', with no retry."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        with Load(port, "new_connection", connections=1) as load:
            poll(lambda: load.failed >= 3, 5, "refused connections counted")
        assert set(load.by_kind()) == {"refused"} and load.ok == 0

    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nv0 4242"
    with socket.create_server(("127.0.0.1", 0)) as server:

        def serve_one_then_hang_up():
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(answer)  # keep-alive: the client will reuse it
                conn.recv(4096)  # the second request: closed with no answer

        thread = threading.Thread(target=serve_one_then_hang_up, daemon=True)
        thread.start()
        conn = Connection(server.getsockname()[1])
        assert conn.get("/")[2] == b"v0 4242"
        with pytest.raises(RequestError) as caught:
            conn.get("/")
        conn.close()
        thread.join(5)
    assert caught.value.kind in ("eof", "reset")


def test_load_client_retries_once_when_a_reused_connection_closes_before_any_byte():
    """As HTTP clients do (RFC 9112 §9.3.1): a GET on a reused connection that
    the server closed before any byte of the response is retried once on a new
    connection; that is counted in ``retries``, not as a failure."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nv0 4242"
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.2)
        stop = threading.Event()

        def serve_one_per_connection():
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.recv(4096)
                    conn.sendall(answer)  # keep-alive: the client will reuse it
                    conn.recv(4096)  # the reused request: closed with no answer

        thread = threading.Thread(target=serve_one_per_connection, daemon=True)
        thread.start()
        try:
            with Load(server.getsockname()[1], "keepalive", connections=1) as load:
                poll(lambda: load.retries >= 5, 10, "retries after idle closes")
        finally:
            stop.set()
            thread.join(5)
    assert load.failed == 0, load.summary()
    assert load.ok >= 5


# -- idle keep-alive connections at drain -------------------------------------------------


def wait_closed(conns: list[Connection], timeout: float) -> list[float]:
    """The monotonic time each connection was closed by the server (EOF or reset)."""
    closed_at: dict[int, float] = {}
    with selectors.DefaultSelector() as selector:
        for index, conn in enumerate(conns):
            conn.sock.setblocking(False)
            selector.register(conn.sock, selectors.EVENT_READ, index)
        deadline = time.monotonic() + timeout
        while len(closed_at) < len(conns):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{len(conns) - len(closed_at)} of {len(conns)} idle "
                    f"connections still open after {timeout}s"
                )
            for key, _ in selector.select(remaining):
                try:
                    data = key.fileobj.recv(4096)  # type: ignore[union-attr]
                except ConnectionResetError:
                    data = b""
                assert data == b"", f"unexpected bytes on an idle connection: {data!r}"
                closed_at[key.data] = time.monotonic()
                selector.unregister(key.fileobj)
    return [closed_at[i] for i in range(len(conns))]


def open_idle(port: int, count: int) -> tuple[list[Connection], Counter[int]]:
    conns = [Connection(port) for _ in range(count)]
    pids: Counter[int] = Counter()
    for conn in conns:
        status, _, body = conn.get("/")
        assert status == 200 and conn.open
        pids[int(body.split()[1])] += 1
    return conns, pids


def unread_by_server(server_port: int, client_port: int) -> int | None:
    """Bytes in the receive queue of the server's end of a loopback connection
    (``/proc/net/tcp``), or None if it is not there."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return int(fields[4].split(":")[1], 16)
    return None


IDLE_ARGS = ("--keep-alive-timeout", "60", "--graceful-timeout", "30")


def test_idle_keepalive_connections_are_closed_when_the_worker_drains(master, tmp_path):
    """Idle ones at once; one with part of its next request received is answered,
    with Connection: close."""
    m = start(master, tmp_path, workers=1, extra=IDLE_ARGS)
    conns, _ = open_idle(m.port, 20)
    (reading,), _ = open_idle(m.port, 1)
    reading.sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")  # the head is not complete
    poll(
        lambda: unread_by_server(m.port, reading.local_port) == 0,
        10,
        "the worker has read the partial head",
    )
    try:
        term = time.monotonic()
        m.signal(signal.SIGTERM)  # the worker starts draining as the master relays it
        closed = wait_closed(conns, timeout=10)
        reading.sock.sendall(b"\r\n")
        reading.sock.settimeout(10)
        answer = reading.sock.recv(65536)
    finally:
        for conn in [*conns, reading]:
            conn.close()
    latest = max(closed) - term
    print(f"\n20 idle keep-alive connections closed within {latest:.3f}s of SIGTERM")
    assert latest < 1.0, f"the last idle connection closed {latest:.2f}s after the drain began"
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200 ") and b"\r\nconnection: close" in head, answer
    assert m.wait_exit(30) == 0


def test_idle_keepalive_connections_of_both_workers_are_closed_by_a_reload(master, tmp_path):
    m = start(master, tmp_path, workers=2, extra=IDLE_ARGS)
    conns, pids = open_idle(m.port, 32)
    try:
        hup = time.monotonic()
        m.signal(signal.SIGHUP)
        closed = wait_closed(conns, timeout=20)
    finally:
        for conn in conns:
            conn.close()
    latest = max(closed) - hup
    print(
        f"\n32 idle keep-alive connections over workers {dict(pids)} closed within "
        f"{latest:.3f}s of SIGHUP"
    )
    assert latest < 3.0, f"the last idle connection closed {latest:.2f}s after the HUP"
    m.wait_log("reload complete", timeout=30)


# -- rolling reload ----------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["keepalive", "new_connection"])
def test_five_reloads_under_load_fail_no_request(master, tmp_path, variant):
    m = start(master, tmp_path, "v0")
    master_pid = m.pid
    windows: list[tuple[str, set[int], float, float]] = []  # version, pids, from, to
    stale_after_log: list[int] = []
    # Keep-alive clients reuse their connections at random moments, so some
    # requests meet a draining worker's close of their idle connection.
    idle_max_s = 0.02 if variant == "keepalive" else 0.0
    with Load(m.port, variant, connections=3, idle_max_s=idle_max_s) as load:
        load.wait_responses(time.monotonic(), 100)
        for n in range(1, 6):
            old = set(m.workers())
            version = f"v{n}"
            (tmp_path / "version.txt").write_text(version + "\n")
            hup = time.monotonic()
            if windows:
                windows[-1] = (*windows[-1][:3], hup)
            m.signal(signal.SIGHUP)
            m.wait_log("reload complete", count=n, timeout=30)
            logged = time.monotonic()
            # The last old worker was told to stop just before that line; once
            # every old worker has exited, only new code can answer.
            new = set(
                m.wait_workers(lambda p, old=old: len(p) == 2 and not old & set(p), timeout=15)
            )
            gone = time.monotonic()
            load.wait_responses(gone, 200)
            windows.append((version, new, gone, float("inf")))
            stale_after_log.append(
                sum(1 for r in load.since(logged) if r.sent < gone and r.version != version)
            )
        load.wait_responses(time.monotonic(), 50)
    log = m.log()
    took = reload_times(log)
    print(f"\n[{variant}] 5 HUP reloads: {load.summary()}")
    print(f"[{variant}] reload convergence (as logged): {', '.join(f'{t:.2f}s' for t in took)}")
    print(
        f"[{variant}] old-code responses to requests sent between the 'reload complete' "
        f"line and the old workers' exit: {stale_after_log}"
    )
    assert "reload aborted" not in log
    assert len(took) == 5
    assert load.failed == 0, load.summary()
    assert m.pid == master_pid
    m.check_alive()
    for version, pids, begin, end in windows:
        inside = [r for r in load.responses if begin <= r.sent and r.received < end]
        assert inside, f"no response in the window of {version}"
        wrong = [r for r in inside if r.version != version or r.pid not in pids]
        assert not wrong, (
            f"after reload to {version} (workers {pids}) "
            f"{len(wrong)}/{len(inside)} responses from other code: {wrong[:5]}"
        )


def test_reload_with_broken_app_is_aborted_and_old_code_keeps_serving(master, tmp_path):
    m = start(master, tmp_path, "v1")
    old = set(m.workers())
    with Load(m.port, "keepalive", connections=2) as load:
        load.wait_responses(time.monotonic(), 100)
        (tmp_path / "version.txt").write_text("v2\n")
        (tmp_path / "app.py").write_text(BROKEN_APP)
        m.signal(signal.SIGHUP)
        log = m.wait_log("reload aborted", timeout=30)
        aborted = time.monotonic()
        line = next(ln for ln in log.splitlines() if "reload aborted" in ln)
        print(f"\nbroken reload: {line}")
        assert "reload complete" not in log
        assert "this release is broken on purpose" in log  # the import error is logged
        after = load.wait_responses(aborted, 200)
        assert {r.version for r in after} == {"v1"}
        assert set(served_by(after)) <= old
        assert set(m.workers()) == old
        m.check_alive()
        failed_during_broken = load.failed

        (tmp_path / "app.py").write_text(APP)
        m.signal(signal.SIGHUP)
        m.wait_log("reload complete", timeout=30)
        new = set(m.wait_workers(lambda p: len(p) == 2 and not old & set(p), timeout=15))
        gone = time.monotonic()
        after_fix = load.wait_responses(gone, 200)
    print(f"broken reload then fixed reload: {load.summary()}")
    assert failed_during_broken == 0, load.summary()
    assert load.failed == 0, load.summary()
    assert {r.version for r in after_fix} == {"v2"}
    assert set(served_by(after_fix)) <= new


# -- scaling ------------------------------------------------------------------------------


def test_ttin_then_ttou_under_load(master, tmp_path):
    m = start(master, tmp_path)
    master_pid = m.pid
    two = set(m.workers())
    with Load(m.port, "new_connection", connections=3) as load:
        load.wait_responses(time.monotonic(), 100)
        m.signal(signal.SIGTTIN)
        m.wait_log("TTIN: 3 workers", timeout=15)
        m.wait_log("ready (slot 2)", timeout=30)
        three = set(m.wait_workers(lambda p: len(p) == 3, timeout=15))
        (added,) = three - two
        up = time.monotonic()
        at_three = load.wait_responses(up, 600)
        # SO_REUSEPORT spreads new connections over the three slots' listeners.
        assert served_by(at_three)[added] > 0, served_by(at_three)

        m.signal(signal.SIGTTOU)
        m.wait_log("TTOU: 2 workers", timeout=30)
        after = set(m.wait_workers(lambda p: len(p) == 2, timeout=15))
        down = time.monotonic()
        at_two = load.wait_responses(down, 300)
    print(
        f"\nTTIN 2->3 then TTOU 3->2: {load.summary()}; "
        f"at 3 workers {dict(served_by(at_three))}, at 2 {dict(served_by(at_two))}"
    )
    assert load.failed == 0, load.summary()
    assert after == two  # the newest slot was retired
    assert set(served_by(at_two)) <= two
    assert m.pid == master_pid


@pytest.mark.parametrize("variant", ["new_connection", "keepalive"])
def test_ttou_under_load(master, tmp_path, variant):
    m = start(master, tmp_path)
    two = set(m.workers())
    keepalive = variant == "keepalive"
    with Load(m.port, variant, connections=6 if keepalive else 3) as load:
        if keepalive:
            # Persistent connections on both workers when TTOU arrives: renew
            # connections until the current ones (no more renewal) reach both.
            for _attempt in range(20):
                load.requests_per_connection = 0
                settled = time.monotonic() + 0.1  # a renewal under way has finished
                if set(served_by(load.wait_responses(settled, 300))) == two:
                    break
                load.requests_per_connection = 20
                load.wait_responses(time.monotonic(), 200)
            else:
                pytest.fail("keep-alive connections never reached both workers")
        else:
            begin = time.monotonic()
            poll(lambda: set(served_by(load.since(begin))) == two, 20, "both workers serving")
        closes_before = load.reconnects + load.retries
        m.signal(signal.SIGTTOU)
        m.wait_log("TTOU: 1 workers", timeout=30)
        (left,) = m.wait_workers(lambda p: len(p) == 1, timeout=15)
        down = time.monotonic()
        after = load.wait_responses(down, 300)
    print(f"\nTTOU 2->1 [{variant}]: {load.summary()}")
    assert load.failed == 0, load.summary()
    assert set(served_by(after)) == {left}
    if keepalive:
        # The retired worker ended its keep-alive connections: with Connection:
        # close on a response, or by closing them while idle (then retried).
        assert load.reconnects + load.retries > closes_before


# -- recycling ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["new_connection", "keepalive"])
def test_max_requests_recycle_under_load(master, tmp_path, variant):
    m = start(master, tmp_path, extra=("--max-requests", "200", "--max-requests-jitter", "20"))
    first = set(m.workers())
    with Load(m.port, variant, connections=3) as load:
        load.wait_responses(time.monotonic(), 50)
        # Every original worker replaced, and a few generations after them.
        m.wait_workers(lambda p: len(p) >= 2 and not first & set(p), timeout=30)
        m.wait_log("recycling (max-requests)", count=6, timeout=40)
        settled = time.monotonic()
        load.wait_responses(settled, 100)
    log = m.log()
    recycled = log.count("recycling (max-requests)")
    pids = set(served_by(load.responses))
    print(
        f"\nmax-requests 200+20 [{variant}]: {load.summary()}; {recycled} recycles, "
        f"{len(pids)} distinct worker pids served"
    )
    assert load.failed == 0, load.summary()
    assert "died" not in log, log[-3000:]
    assert len(pids) >= 6
    m.check_alive()


MARKING_WS_APP = """\
import os
import sys

from app_server import App, text

app = App("marking")


@app.get("/")
async def index(request):
    return text(f"v0 {os.getpid()}")


@app.websocket("/ws")
async def ws(request, ws):
    async for message in ws:
        print(f"websocket got {message}", file=sys.stderr, flush=True)
        await ws.send(message)
"""


def test_a_websocket_counts_toward_max_requests_when_it_closes(master, tmp_path):
    """SPEC §5: counted at close, not at the upgrade. With --max-requests 2, a
    WebSocket and then one HTTP request reach the limit only once the
    WebSocket closes; counted at the upgrade, the HTTP request would ask for
    the recycle (synchronously, before the next message is read) while the
    WebSocket was still open."""
    from websockets.sync.client import connect as ws_connect

    m = master(
        ["app:app", "--workers", "1", "--max-requests", "2", "--no-access-log"],
        files={"app.py": MARKING_WS_APP},
    )
    m.wait_log("all 1 workers ready", timeout=30)
    (worker,) = m.wait_workers(lambda pids: len(pids) == 1, timeout=10)
    with ws_connect(f"ws://127.0.0.1:{m.port}/ws", open_timeout=10) as ws:
        conn = Connection(m.port)
        try:
            assert conn.get("/", close=True)[0] == 200
        finally:
            conn.close()
        ws.send("mark")
        assert ws.recv(timeout=10) == "mark"
    log = m.wait_log("asking to be recycled", timeout=30)
    assert "served 2 requests" in log
    assert log.index("websocket got mark") < log.index("asking to be recycled"), log[-3000:]
    m.wait_workers(lambda pids: len(pids) == 1 and worker not in pids, timeout=30)


def test_reload_flag_reloads_when_a_source_file_changes(master, tmp_path):
    m = start(master, tmp_path, "v1", workers=1, extra=("--reload",))
    old = set(m.workers())
    with Load(m.port, "new_connection", connections=1) as load:
        load.wait_responses(time.monotonic(), 5)
        (tmp_path / "version.txt").write_text("v2\n")
        app = tmp_path / "app.py"
        app.write_text(app.read_text() + "\n# edited\n")  # a .py file changed
        m.wait_log("source files changed: reloading", timeout=15)
        m.wait_log("reload complete", timeout=30)
        m.wait_workers(lambda p: len(p) == 1 and not old & set(p), timeout=20)
        changed = time.monotonic()
        after = load.wait_responses(changed, 10)
    assert {r.version for r in after} == {"v2"}
    assert load.failed == 0, load.summary()
    m.check_alive()


MEMORY_APP = (
    APP
    + """

HOARD = []


@app.get("/hoard")
async def hoard(request):
    HOARD.append(bytearray(80 * 1024 * 1024))  # touched: it counts in RSS
    HOARD[-1][::4096] = b"x" * len(HOARD[-1][::4096])
    return text(f"{VERSION} {os.getpid()}")
"""
)


def test_max_lifetime_recycles_every_worker_without_a_failed_request(master, tmp_path):
    m = start(master, tmp_path, extra=("--max-lifetime", "2", "--max-lifetime-jitter", "0.5"))
    first = set(m.workers())
    with Load(m.port, "new_connection", connections=2) as load:
        m.wait_log("recycling (max-lifetime)", count=4, timeout=30)
        m.wait_workers(lambda p: len(p) == 2 and not first & set(p), timeout=20)
        load.wait_responses(time.monotonic(), 50)
    print(
        f"\nmax-lifetime 2+0.5s: {load.summary()}; "
        f"{m.log().count('recycling (max-lifetime)')} recycles"
    )
    assert load.failed == 0, load.summary()
    assert "died" not in m.log()


def test_max_memory_recycles_the_worker_that_grew(master, tmp_path):
    (tmp_path / "version.txt").write_text("v0\n")
    m: Master = master(
        [*BASE_ARGS, "--workers", "2", "--max-memory", "150"], files={"app.py": MEMORY_APP}
    )
    m.wait_log("all 2 workers ready", timeout=30)
    pids = m.wait_workers(lambda p: len(p) == 2)
    with Load(m.port, "new_connection", connections=1) as load:
        conn = Connection(m.port)
        try:
            status, _, body = conn.get("/hoard")
            assert status == 200
            status, _, body = conn.get("/hoard")  # about 160 MiB more than at start
            assert status == 200
        finally:
            conn.close()
        grown = int(body.decode().split()[1])
        m.wait_log(f"worker {grown} uses", timeout=15)
        m.wait_workers(lambda p: len(p) == 2 and grown not in p, timeout=20)
        load.wait_responses(time.monotonic(), 20)
    others = set(pids) - {grown}
    print(f"\nmax-memory 150 MiB: worker {grown} recycled; {load.summary()}")
    assert f"worker {grown} (slot" in m.log() and "recycling (max-memory)" in m.log()
    assert others <= set(m.workers()), "only the worker that grew is recycled"
    assert load.failed == 0, load.summary()


# -- WebSockets ---------------------------------------------------------------------------


def test_reload_closes_50_websockets_with_1012_and_all_reconnect(master, tmp_path):
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    m = start(master, tmp_path, "v1")
    old = set(m.workers())
    url = f"ws://127.0.0.1:{m.port}/ws"

    async def open_one():
        ws = await connect(url, open_timeout=10, ping_interval=None, max_queue=None)
        hello = await asyncio.wait_for(ws.recv(), 10)
        return ws, hello

    async def close_code(ws) -> int | None:
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None

    async def scenario():
        opened = await asyncio.gather(*(open_one() for _ in range(50)))
        hellos = [hello for _, hello in opened]
        assert all(h.startswith("v1 ") for h in hellos)
        assert {int(h.split()[1]) for h in hellos} <= old
        (tmp_path / "version.txt").write_text("v2\n")
        m.signal(signal.SIGHUP)
        t0 = time.monotonic()
        codes = await asyncio.wait_for(asyncio.gather(*(close_code(ws) for ws, _ in opened)), 30)
        closed_in = time.monotonic() - t0
        again = await asyncio.gather(*(open_one() for _ in range(50)))
        echoes = await asyncio.gather(*(echo(ws, i) for i, (ws, _) in enumerate(again)))
        for ws, _ in again:
            await ws.close()
        return codes, closed_in, [hello for _, hello in again], echoes

    async def echo(ws, i: int) -> bool:
        await ws.send(f"ping {i}")
        return await asyncio.wait_for(ws.recv(), 10) == f"ping {i}"

    codes, closed_in, hellos, echoes = asyncio.run(scenario())
    m.wait_log("reload complete", timeout=30)
    new = set(m.wait_workers(lambda p: len(p) == 2 and not old & set(p), timeout=15))
    print(
        f"\n50 WebSockets: close codes {dict(Counter(codes))} within {closed_in:.2f}s of HUP; "
        f"reconnected to {dict(Counter(int(h.split()[1]) for h in hellos))}"
    )
    assert codes == [1012] * 50
    assert all(h.startswith("v2 ") for h in hellos)
    assert {int(h.split()[1]) for h in hellos} <= new
    assert all(echoes)


# -- balance ------------------------------------------------------------------------------


def test_64_keepalive_connections_are_balanced_over_2_workers(master, tmp_path):
    """No worker holds more than 65 % of 64 keep-alive connections.

    The kernel picks a SO_REUSEPORT listener by a hash of the connection's
    addresses, so the split is binomial(64, 1/2): a fair server still puts
    more than 41 connections on one worker in about 1.7 % of samples. One
    fresh sample of 64 connections is taken if the first is over the bar
    (both are reported); an unbalanced server fails both.
    """
    m = start(master, tmp_path)
    workers = set(m.workers())
    splits = []
    for _attempt in range(2):
        conns = [Connection(m.port) for _ in range(64)]
        try:
            pids = []
            for conn in conns:
                status, _, body = conn.get("/")
                assert status == 200
                pids.append(int(body.split()[1]))
            for conn, pid in zip(conns, pids, strict=True):  # still the same worker: kept alive
                status, _, body = conn.get("/")
                assert conn.open and int(body.split()[1]) == pid
        finally:
            for conn in conns:
                if conn.open:
                    conn.close()
        split = Counter(pids)
        splits.append(dict(split))
        assert set(split) <= workers
        if max(split.values()) <= 0.65 * 64:
            break
    print(f"\n64 keep-alive connections over 2 workers: {splits}")
    assert max(splits[-1].values()) <= 0.65 * 64, splits


# -- a race pinned down ----------------------------------------------------------------------


def test_connection_accepted_just_as_drain_begins_is_served(tmp_path):
    """Deterministic form of a rare EOF seen under reload/recycle load.

    The window is the one loop iteration between the worker learning it must
    stop and ``_drain`` closing its listener. To hold that window open, the
    master and workers log into a pipe this test owns and fills: the old
    worker blocks writing "shutting down", a connection is queued meanwhile,
    and the pipe is emptied so the worker accepts it in that very iteration.
    """
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "version.txt").write_text("v1\n")
    port = free_port()
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app_server",
            *BASE_ARGS,
            "--workers",
            "1",
            "--port",
            str(port),
            "--metrics-bind",
            "off",
        ],
        cwd=tmp_path,
        env=clean_env(PYTHONDONTWRITEBYTECODE="1"),
        stdout=write_end,
        stderr=write_end,
    )
    output = bytearray()

    def read_log() -> str:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(read_end, 65536):
                output.extend(chunk)
        return output.decode(errors="replace")

    def wait_for(pattern: str) -> re.Match[str]:
        return poll(lambda: re.search(pattern, read_log()), 30, f"{pattern!r} in the log")

    def wchan(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/wchan").read_text()
        except FileNotFoundError:
            raise AssertionError(f"worker {pid} is gone:\n{read_log()[-3000:]}") from None

    def gone(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split()[2] in "ZX"
        except FileNotFoundError:
            return True

    stopped: list[int] = []
    try:
        old = int(wait_for(r"worker (\d+) ready \(slot 0\)").group(1))
        wait_for("all 1 workers ready")
        os.kill(old, signal.SIGSTOP)
        stopped.append(old)
        proc.send_signal(signal.SIGHUP)
        new = int(wait_for(rf"worker (?!{old}\b)(\d+) ready \(slot 0\)").group(1))
        wait_for("reload complete")  # STOP(reload) is waiting in the old worker's channel
        os.kill(new, signal.SIGSTOP)  # the queued connection can only go to the old one
        stopped.append(new)
        # A second open file description of the pipe, non-blocking for us only
        # (O_NONBLOCK on write_end itself would be shared with the server's stderr).
        filler = os.open(f"/proc/self/fd/{write_end}", os.O_WRONLY | os.O_NONBLOCK)
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(filler, b"#" * 4096)  # the log pipe is full
        os.close(filler)
        os.kill(old, signal.SIGCONT)
        stopped.remove(old)
        poll(
            lambda: "pipe_write" in wchan(old), 10, "the old worker blocked logging 'shutting down'"
        )
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        read_log()  # empty the pipe: the old worker goes on
        poll(lambda: read_log() is None or gone(old), 10, "the old worker's exit")
        os.kill(new, signal.SIGCONT)
        stopped.remove(new)
        with client:
            first = b""
            with contextlib.suppress(OSError):
                first = client.recv(65536)
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            poll(lambda: read_log() is None or proc.poll() is not None, 30, "master exit")
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(write_end)
        read_log()
        os.close(read_end)
    assert first.startswith(b"HTTP/1.1 200 "), (
        f"the connection queued as the old worker began draining got {first!r};\n"
        f"{output.decode(errors='replace').replace('#', '')[-3000:]}"
    )
