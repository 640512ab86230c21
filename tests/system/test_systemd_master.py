"""The master under systemd's protocols (SPEC §6), with sockets the test owns.

* notify: the test binds the ``NOTIFY_SOCKET`` datagram socket and reads what
  the master sends (READY, STATUS, RELOADING + MONOTONIC_USEC, STOPPING,
  WATCHDOG);
* socket activation: the test binds a TCP and a unix listener and hands them
  to the master as descriptors 3 and 4 with ``LISTEN_FDS``/``LISTEN_PID``/
  ``LISTEN_FDNAMES``, as systemd does.

Every wait is a poll with a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from tests.system.harness import Master, clean_env, free_port, poll

APP = """
import os
import time

from app_server import App, json, text

app = App("systemd")


@app.get("/")
async def index(request):
    return text(str(os.getpid()))


@app.get("/env")
async def env(request):
    keys = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
            "LISTEN_FDNAMES")
    return json({key: os.environ.get(key) for key in keys})


@app.get("/block")
async def block(request):
    time.sleep(1000)
    return text("never")
"""

StartMaster = Callable[..., Master]


@dataclass
class Datagram:
    at: float  # time.monotonic() when received
    fields: dict[str, str]
    all_ready_logged: bool  # "all N workers ready" was in the log when it arrived


class NotifyListener:
    """The ``NOTIFY_SOCKET`` end: collects every datagram in a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.received: list[Datagram] = []
        self.master: Master | None = None
        self.ready_line = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, master: Master, ready_line: str) -> None:
        self.master, self.ready_line = master, ready_line
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            at = time.monotonic()
            logged = self.master is not None and self.ready_line in self.master.log()
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.received.append(Datagram(at, fields, logged))

    def with_key(self, key: str) -> list[Datagram]:
        return [d for d in list(self.received) if key in d.fields]

    def wait(self, key: str, count: int = 1, timeout: float = 20) -> list[Datagram]:
        def enough() -> list[Datagram] | None:
            found = self.with_key(key)
            return found if len(found) >= count else None

        return poll(enough, timeout, f"{count}x {key} (got {self.received})")  # type: ignore[no-any-return]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path):  # type: ignore[no-untyped-def]
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()


def test_notify_ready_reloading_stopping_status(
    master: StartMaster, notify: NotifyListener
) -> None:
    env = clean_env(NOTIFY_SOCKET=str(notify.path))
    m = master(["--workers", "2", "app:app"], files={"app.py": APP}, env=env)
    notify.start(m, "all 2 workers ready")
    (ready,) = notify.wait("READY")
    assert ready.all_ready_logged, "READY=1 before every worker was ready"
    assert len(m.workers()) == 2
    statuses = [d.fields["STATUS"] for d in notify.with_key("STATUS")]
    assert statuses and statuses[0].startswith("starting")
    assert ready.fields.get("STATUS") == "2 of 2 workers ready"
    # Workers neither inherit the variable nor could they notify anyway.
    assert httpx.get(m.url + "/env").json()["NOTIFY_SOCKET"] is None

    before_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    m.signal(signal.SIGHUP)
    (reloading,) = notify.wait("RELOADING")
    after_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert reloading.fields["RELOADING"] == "1"
    assert before_usec <= int(reloading.fields["MONOTONIC_USEC"]) <= after_usec
    ready_again = notify.wait("READY", count=2)[1]
    assert ready_again.at >= reloading.at
    assert "reload complete" in m.log()
    assert len(notify.with_key("RELOADING")) == 1
    m.wait_workers(lambda p: len(p) == 2, timeout=15)  # the old ones finish exiting
    assert httpx.get(m.url).status_code == 200

    m.signal(signal.SIGTERM)
    (stopping,) = notify.wait("STOPPING")
    assert stopping.fields["STOPPING"] == "1"
    assert m.wait_exit(timeout=20) == 0
    order = [
        key
        for d in notify.received
        for key in ("READY", "RELOADING", "STOPPING")
        if key in d.fields
    ]
    assert order == ["READY", "RELOADING", "READY", "STOPPING"]
    assert not notify.with_key("WATCHDOG")  # no WATCHDOG_USEC: no watchdog


def _watchdog_gaps(
    master: StartMaster, notify: NotifyListener, usec: int, count: int
) -> list[float]:
    env = clean_env(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC=str(usec))
    m = master(["--workers", "2", "app:app"], files={"app.py": APP}, env=env)
    notify.start(m, "all 2 workers ready")
    notify.wait("READY")
    pings = notify.wait("WATCHDOG", count=count, timeout=count * usec / 1e6 + 10)
    assert all(p.fields["WATCHDOG"] == "1" for p in pings)
    env_seen = httpx.get(m.url + "/env").json()
    assert env_seen["WATCHDOG_USEC"] is None and env_seen["WATCHDOG_PID"] is None
    gaps = [b.at - a.at for a, b in zip(pings, pings[1:], strict=False)]
    print(
        f"\nwatchdog: WATCHDOG_USEC={usec}, {len(gaps)} gaps, median "
        f"{statistics.median(gaps):.3f}s, max {max(gaps):.3f}s"
    )
    return gaps


def test_watchdog_pings_while_workers_heartbeat(
    master: StartMaster, notify: NotifyListener
) -> None:
    usec = 2_000_000  # WatchdogSec=2s: WATCHDOG=1 about every second
    gaps = _watchdog_gaps(master, notify, usec, count=5)
    assert 0.8 <= statistics.median(gaps) <= 1.6
    assert max(gaps) < usec / 1e6  # never as late as systemd's deadline


def test_watchdog_keeps_up_with_a_short_watchdog_usec(
    master: StartMaster, notify: NotifyListener
) -> None:
    usec = 400_000  # WatchdogSec=400ms: WATCHDOG=1 every 200ms
    gaps = _watchdog_gaps(master, notify, usec, count=10)
    assert 0.15 <= statistics.median(gaps) <= 0.3
    assert max(gaps) < usec / 1e6


def test_no_watchdog_for_another_pid(master: StartMaster, notify: NotifyListener) -> None:
    env = clean_env(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="200000", WATCHDOG_PID="1")
    m = master(["--workers", "1", "app:app"], files={"app.py": APP}, env=env)
    notify.start(m, "all 1 workers ready")
    notify.wait("READY")
    # Synchronise on a later message: after a reload's READY, ~>5 watchdog
    # periods of 0.1s have passed in the master's loop.
    m.signal(signal.SIGHUP)
    notify.wait("READY", count=2)
    assert not notify.with_key("WATCHDOG")


def test_no_watchdog_while_the_only_worker_is_blocked(
    master: StartMaster, notify: NotifyListener
) -> None:
    # --timeout 30: the master would not kill the blocked worker during the test;
    # heartbeats come every min(1, 30/4) = 1s, so after ~2.5s without one the
    # worker is not heartbeating and systemd must not be told all is well.
    env = clean_env(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="400000")
    m = master(
        ["--workers", "1", "--timeout", "30", "--graceful-timeout", "1", "app:app"],
        files={"app.py": APP},
        env=env,
    )
    notify.start(m, "all 1 workers ready")
    notify.wait("READY")
    notify.wait("WATCHDOG", count=3)
    (worker,) = m.workers()
    blocked = socket.create_connection(("127.0.0.1", m.port), timeout=5)
    try:
        blocked.sendall(b"GET /block HTTP/1.1\r\nHost: t\r\n\r\n")
        t0 = time.monotonic()
        # The blocked loop sends no heartbeat; wait past 3 heartbeat intervals.
        poll(lambda: time.monotonic() - t0 > 6, 10, "6 seconds of blocked worker", interval=0.2)
        late = [d for d in notify.with_key("WATCHDOG") if d.at > t0 + 3.5]
        assert not late, f"{len(late)} WATCHDOG=1 while the worker was blocked"
    finally:
        blocked.close()
        os.kill(worker, signal.SIGKILL)


# -- socket activation -------------------------------------------------------------------

ACTIVATED = """
import fcntl
import os
import sys

sys.path.insert(0, "")
# Arrange the sockets the test passed (at whatever numbers) as fds 3 and 4, the
# way systemd passes them, and announce them to this very process.
sources = [int(fd) for fd in os.environ.pop("TEST_LISTEN_SOURCES").split(",")]
parked = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in sources]
for fd in sources:
    os.close(fd)
for index, fd in enumerate(parked):
    os.dup2(fd, 3 + index)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(len(parked))
os.environ["LISTEN_FDNAMES"] = "http:admin"

import app_server.cli  # noqa: E402

sys.exit(app_server.cli.main(sys.argv[1:]))
"""


def test_socket_activation_serves_the_inherited_sockets(
    master: StartMaster, tmp_path: Path
) -> None:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(128)
    port = tcp.getsockname()[1]
    path = str(tmp_path / "admin.sock")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(path)
    unix.listen(128)
    fds = (tcp.fileno(), unix.fileno())
    for fd in fds:
        os.set_inheritable(fd, True)
    other_port = free_port()  # what --port says; must stay unbound
    try:
        env = clean_env(TEST_LISTEN_SOURCES=",".join(map(str, fds)))
        m = master(
            ["--workers", "2", "--port", str(other_port), "app:app"],
            files={"app.py": APP, "activated.py": ACTIVATED},
            env=env,
            pass_fds=fds,
            command=[sys.executable, "activated.py"],
            port=port,
        )
        m.wait_log("all 2 workers ready")
        workers = m.wait_workers(lambda p: len(p) == 2)
    finally:
        tcp.close()  # the master holds its own copies now (or failed)
        unix.close()

    seen = set()
    with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=5) as over_unix:
        for _ in range(20):
            response = over_unix.get("http://admin/", headers={"Connection": "close"})
            assert response.status_code == 200
            seen.add(int(response.text))
    for _ in range(20):
        response = httpx.get(
            f"http://127.0.0.1:{port}/", timeout=5, headers={"Connection": "close"}
        )
        assert response.status_code == 200
        seen.add(int(response.text))
    assert seen <= set(workers)
    assert httpx.get(f"http://127.0.0.1:{port}/env").json() == {
        "NOTIFY_SOCKET": None,
        "WATCHDOG_USEC": None,
        "WATCHDOG_PID": None,
        "LISTEN_FDS": None,
        "LISTEN_PID": None,
        "LISTEN_FDNAMES": None,
    }

    # Nothing new was bound: the master's listening sockets are the inherited ones.
    process = psutil.Process(m.pid)
    listening = [c for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    served = [
        (c.laddr.ip, c.laddr.port) for c in listening if c.laddr.port != m.metrics_port
    ]  # the master's own /metrics endpoint
    assert served == [("127.0.0.1", port)]
    unix_paths = {c.laddr for c in process.net_connections(kind="unix") if c.laddr}
    assert path in unix_paths
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", other_port), timeout=2).close()
    for pid in workers:
        for conn in psutil.Process(pid).net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                assert conn.laddr.port == port

    m.signal(signal.SIGTERM)
    assert m.wait_exit(timeout=20) == 0
    # systemd's socket file is not the server's to remove.
    assert os.path.exists(path)
