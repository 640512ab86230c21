"""Log files and their rotation on a real master with two workers (SPEC §11, issue 12).

``--log-file`` and ``--access-log-file`` are opened by the master and
inherited by its forked workers. The test rotates them as logrotate does
without ``copytruncate`` (``os.rename``, then USR1 to the master), while a
client keeps sending requests, and checks: every process (the master and
both workers) writes its next lines to the new files, the server's own
lines (a handler error logged by each worker) land there too, and every
request made before, during and after the rotation has exactly one access
line across the old and the new file. Every wait is a poll with a deadline.
"""

from __future__ import annotations

import re
import signal
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.system.harness import Master, poll

APP = """
import os

from app_server import App, text

app = App("logs")


@app.get("/n/<i:int>")
async def numbered(request, i: int):
    return text(str(os.getpid()))


@app.get("/boom/<tag>")
async def boom(request, tag: str):
    raise RuntimeError(f"boom {tag} in {os.getpid()}")
"""

ACCESS_LINE = re.compile(r'"GET /n/(\d+) HTTP/1\.1" 200 ')
REOPENED = re.compile(r"\[(\d+)\] \[INFO\] reopened 2 log file\(s\)")

StartMaster = Callable[..., Master]


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def alive_and(m: Master, condition: Callable[[], object]) -> Callable[[], object]:
    """A poll predicate that fails at once if the master has exited."""

    def check() -> object:
        m.check_alive()
        return condition()

    return check


def numbers(*paths: Path) -> Counter[int]:
    seen: Counter[int] = Counter()
    for path in paths:
        seen.update(int(m) for m in ACCESS_LINE.findall(read(path)))
    return seen


class Traffic:
    """Numbered requests, one new connection each (so both workers get some)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.next = 0
        self.pids: dict[int, int] = {}  # request number -> worker pid
        self.errors: list[str] = []

    def one(self) -> int:
        number = self.next
        self.next += 1
        try:
            response = httpx.get(f"{self.url}/n/{number}", timeout=10)
            assert response.status_code == 200, response.status_code
            self.pids[number] = int(response.text)
        except Exception as exc:  # noqa: BLE001 - every failure is reported by the test
            self.errors.append(f"request {number}: {exc!r}")
        return number

    def until_both_workers(self, workers: set[int], since: int) -> None:
        def both() -> bool:
            self.one()
            return {p for n, p in self.pids.items() if n >= since} >= workers

        poll(both, 30, "requests reaching both workers", interval=0)


def boom_until_both_logged(url: str, tag: str, log: Path, workers: set[int]) -> None:
    """Handler errors until each worker has logged one with ``tag`` into ``log``."""

    def logged() -> bool:
        response = httpx.get(f"{url}/boom/{tag}", timeout=10)
        assert response.status_code == 500
        text = read(log)
        return all(f"boom {tag} in {pid}" in text for pid in workers)

    poll(logged, 30, f"both workers' {tag} errors in {log}", interval=0)


def test_rename_and_usr1_reopen_every_process_and_lose_no_access_line(
    master: StartMaster, tmp_path: Path
) -> None:
    log = tmp_path / "logs" / "server.log"
    access = tmp_path / "logs" / "access.log"
    log.parent.mkdir()
    m = master(
        ["--workers", "2", "--log-file", str(log), "--access-log-file", str(access), "app:app"],
        {"app.py": APP},
    )
    poll(
        alive_and(m, lambda: "all 2 workers ready" in read(log)),
        30,
        f"workers ready; log:\n{read(log)}",
    )
    workers = set(m.wait_workers(lambda pids: len(pids) == 2))

    traffic = Traffic(m.url)
    traffic.until_both_workers(workers, since=0)
    boom_until_both_logged(m.url, "before", log, workers)
    before = traffic.next

    # A client keeps going while the files move and the processes reopen them.
    stop = threading.Event()

    def keep_sending() -> None:
        while not stop.is_set():
            traffic.one()

    sender = threading.Thread(target=keep_sending, daemon=True)
    sender.start()
    try:
        poll(lambda: traffic.next >= before + 20, 30, "traffic during the rotation")
        old_log, old_access = log.with_suffix(".log.1"), access.with_suffix(".log.1")
        log.rename(old_log)
        access.rename(old_access)
        m.signal(signal.SIGUSR1)

        def reopened_everywhere() -> bool:
            m.check_alive()
            return {int(pid) for pid in REOPENED.findall(read(log))} >= workers | {m.pid}

        poll(reopened_everywhere, 30, f"a reopen line from every process:\n{read(log)}")
        after = traffic.next
        poll(lambda: traffic.next >= after + 20, 30, "traffic after the rotation")
    finally:
        stop.set()
        sender.join(timeout=30)
    assert not traffic.errors, traffic.errors[:5]

    # After the reopen, every process writes to the new files only.
    since = traffic.next
    traffic.until_both_workers(workers, since=since)
    boom_until_both_logged(m.url, "after", log, workers)
    assert "boom after" not in read(old_log)
    assert "boom before" not in read(log)
    total = traffic.next
    assert set(m.workers()) == workers, "a worker was replaced during the rotation"

    # Every request has exactly one access line across the two files (the
    # line is written after the response, so the last ones may lag a little).
    poll(lambda: len(numbers(old_access, access)) >= total, 30, "an access line for every request")
    counts = numbers(old_access, access)
    assert sorted(counts) == list(range(total))
    assert [n for n, c in counts.items() if c != 1] == []
    new_numbers = set(numbers(access))
    assert set(range(since, total)) <= new_numbers
    assert {traffic.pids[n] for n in new_numbers} == workers
    assert set(range(before)) <= set(numbers(old_access))
    # And stderr stays quiet: the master's own log (its stderr) has no server line.
    assert "reopened" not in m.log()


def test_unwritable_log_file_stops_startup_with_one_line(
    master: StartMaster, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-dir" / "server.log"
    m = master(["--log-file", str(missing), "app:app"], {"app.py": APP})
    assert m.wait_exit(30) == 2
    lines = m.log().strip().splitlines()
    assert lines == [
        f"app-server: cannot open log file {str(missing)!r}: No such file or directory"
    ]


@pytest.mark.parametrize("flag", ["--log-file", "--access-log-file"])
def test_log_file_flags_are_in_help(flag: str) -> None:
    from app_server.settings.resolve import format_help

    assert flag in format_help()


SLOW_BOOT_APP = """
import os
import time
from pathlib import Path

from app_server import App, text

# The master's start-up probe imports this module first and passes; a worker
# then waits here (at most 30 s) until the test creates go.flag.
if Path("probed").exists():
    Path(f"booting.{os.getpid()}").touch()
    for _ in range(1500):
        if Path("go.flag").exists():
            break
        time.sleep(0.02)
else:
    Path("probed").touch()

app = App("slow")


@app.get("/")
async def index(request):
    return text(str(os.getpid()))
"""


def test_usr1_while_a_worker_imports_the_app_is_carried_out_once_it_serves(
    master: StartMaster, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    m = master(["--log-file", str(log), "app:app"], {"app.py": SLOW_BOOT_APP})
    booting = poll(
        alive_and(m, lambda: list(tmp_path.glob("booting.*"))), 30, "a worker importing the app"
    )
    pid = int(booting[0].suffix[1:])
    log.rename(tmp_path / "server.log.1")
    m.signal(signal.SIGUSR1)
    # The master reopens at once; the importing worker must neither die of
    # the signal nor forget it.
    poll(
        alive_and(m, lambda: f"[{m.pid}] [INFO] reopened" in read(log)),
        30,
        "the master's reopen line",
    )
    (tmp_path / "go.flag").touch()
    poll(
        alive_and(m, lambda: "all 1 workers ready" in read(log)),
        30,
        f"the worker ready; log:\n{read(log)}\n{read(tmp_path / 'server.log.1')}",
    )
    assert f"[{pid}] [INFO] reopened 1 log file(s)" in read(log)
    assert m.workers() == [pid]
    assert httpx.get(m.url + "/", timeout=10).text == str(pid)


HANGING_APP = """
import os
import time

from app_server import App, text

app = App("hangs")


@app.get("/")
async def index(request):
    return text(str(os.getpid()))


@app.get("/block")
async def block(request):
    time.sleep(30)  # blocks the event loop: no heartbeat
    return text("never")
"""


def test_hung_workers_stacks_go_to_the_log_file_after_a_rotation(
    master: StartMaster, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    m = master(
        ["--log-file", str(log), "--timeout", "2", "--graceful-timeout", "2", "app:app"],
        {"app.py": HANGING_APP},
    )
    poll(alive_and(m, lambda: "all 1 workers ready" in read(log)), 30, "ready")
    (hung,) = m.wait_workers(lambda pids: len(pids) == 1)
    log.rename(tmp_path / "server.log.1")
    m.signal(signal.SIGUSR1)
    poll(lambda: f"[{hung}] [INFO] reopened" in read(log), 30, "the worker reopened")
    with pytest.raises(httpx.HTTPError):
        httpx.get(m.url + "/block", timeout=httpx.Timeout(10, read=15))
    # SIGABRT after --timeout: faulthandler writes the stacks into the new file.
    poll(
        lambda: "in block" in read(log) and "SIGABRT" in read(log),
        30,
        f"the hung worker's stack in the log:\n{read(log)}",
    )
    assert "Current thread" in read(log) or "Thread 0x" in read(log)
    assert "in block" not in read(tmp_path / "server.log.1")
    assert "in block" not in m.log()  # not on stderr
