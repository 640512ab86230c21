"""Running a real master: ``app-server`` as a subprocess with real workers.

``Master`` starts ``python -m app_server`` in a directory holding the test's
app, collects its log (stderr) in a file, and offers polling helpers (never
sleeps to synchronise): ``wait_log`` for a log line, ``workers()`` for the
live worker pids (children of the master), ``wait_workers`` for a condition
on them. ``stop()`` ends the master (TERM, then KILL) and any worker it left.
The ``master`` fixture stops every master a test started, even on failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import wait_until


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def poll(
    predicate: Callable[[], Any], timeout: float, what: str = "", interval: float = 0.02
) -> Any:
    """``wait_until`` with a description of what was awaited in its error."""
    try:
        return wait_until(predicate, timeout, interval)
    except TimeoutError:
        raise TimeoutError(f"not within {timeout}s: {what or predicate}") from None


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("APP_SERVER_", "LISTEN_", "NOTIFY_SOCKET", "WATCHDOG_"))
    }
    env.update(extra)
    return env


class Master:
    def __init__(
        self,
        cwd: Path,
        args: list[str],
        env: dict[str, str] | None = None,
        port: int | None = None,
        pass_fds: tuple[int, ...] = (),
        command: list[str] | None = None,
        add_metrics_bind: bool = True,
    ) -> None:
        self.cwd = cwd
        self.port = port if port is not None else free_port()
        self.log_path = cwd / f"master-{self.port}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        argv = command or [sys.executable, "-m", "app_server"]
        if port is not None or "--bind" not in args:
            args = [*args, "--port", str(self.port)] if "--bind" not in args else args
        self.metrics_port = 0
        # Never the shared default port (add_metrics_bind=False: a config file sets it).
        if "--metrics-bind" not in args and add_metrics_bind:
            self.metrics_port = free_port()
            args = [*args, "--metrics-bind", f"127.0.0.1:{self.metrics_port}"]
        self.process = subprocess.Popen(
            [*argv, *args],
            cwd=cwd,
            env=env if env is not None else clean_env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            pass_fds=pass_fds,
        )
        self.pid = self.process.pid
        self._known: set[int] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, count: int = 1, timeout: float = 30.0, since: int = 0) -> str:
        """Wait for ``count`` lines with ``text`` in the log after offset ``since``
        (``len(m.log())`` taken earlier), so a line from before that point, such as
        an earlier occurrence of the same event, does not count."""

        def seen() -> bool:
            self.check_alive()
            return self.log()[since:].count(text) >= count

        poll(seen, timeout, f"{count}x {text!r} in the log:\n{self.log()[-3000:]}")
        return self.log()

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            code = self.process.returncode
            raise AssertionError(f"master exited with {code}:\n{self.log()[-3000:]}")

    def workers(self) -> list[int]:
        """Live worker pids (children of the master that are not zombies)."""
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        pids = []
        for child in children:
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    pids.append(child.pid)
            except psutil.NoSuchProcess:
                continue
        self._known.update(pids)
        return pids

    def wait_workers(
        self, predicate: Callable[[list[int]], bool], timeout: float = 30.0
    ) -> list[int]:
        def check() -> list[int] | None:
            self.check_alive()
            pids = self.workers()
            return pids if predicate(pids) else None

        return poll(check, timeout, f"worker condition; log:\n{self.log()[-3000:]}")  # type: ignore[no-any-return]

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        try:
            if self.process.poll() is None:
                self.workers()
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            for pid in self._known:
                try:
                    proc = psutil.Process(pid)
                    if proc.ppid() in (self.pid, 1):
                        proc.kill()
                except psutil.NoSuchProcess:
                    pass
            self._log.close()


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Callable[..., Master]]:
    """``master(args, app_files={...})``: start a master in tmp_path; all stopped at the end."""
    started: list[Master] = []

    def start(args: list[str], files: dict[str, str] | None = None, **kwargs: Any) -> Master:
        for name, text in (files or {}).items():
            (tmp_path / name).write_text(text)
        m = Master(tmp_path, args, **kwargs)
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop()
