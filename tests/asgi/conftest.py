"""Real server processes for the ASGI framework tests: Uvicorn and app-server.

``start_server(kind, target)`` starts ``python -m uvicorn TARGET`` or
``python -m app_server TARGET`` (one worker, OS-free port, repository root as
working directory) and waits, by polling, until it answers HTTP. Every server
is stopped by pid (TERM, then KILL) at the end of the module that started it,
even when a test failed. The log of each is kept for the failure messages.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.system.harness import clean_env, free_port, poll

ROOT = Path(__file__).resolve().parents[2]
SERVERS = ("uvicorn", "app-server")


class ServerProcess:
    def __init__(self, kind: str, target: str) -> None:
        self.kind = kind
        self.target = target
        self.port = free_port()
        if kind == "uvicorn":
            # wsproto: the WebSocket stack app-server uses too, so frames compare like for like.
            argv = [
                sys.executable,
                "-m",
                "uvicorn",
                target,
                "--port",
                str(self.port),
                "--ws",
                "wsproto",
                "--http",
                "httptools",
                "--loop",
                "uvloop",
                "--lifespan",
                "auto",
                "--no-access-log",
            ]
        else:
            argv = [
                sys.executable,
                "-m",
                "app_server",
                target,
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--interface",
                "auto",
                "--no-access-log",
                "--metrics-bind",
                f"127.0.0.1:{free_port()}",
            ]
        self._log = tempfile.NamedTemporaryFile(prefix=f"asgi-{kind}-", suffix=".log", delete=False)
        self.log_path = Path(self._log.name)
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=clean_env(PYTHONPATH=str(ROOT)),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._children: set[int] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        def answers() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.kind} {self.target} exited with "
                    f"{self.process.returncode}:\n{self.log()[-3000:]}"
                )
            try:
                self._children.update(c.pid for c in psutil.Process(self.process.pid).children())
            except psutil.NoSuchProcess:
                pass
            try:
                httpx.get(self.url + "/", timeout=1.0)
            except httpx.TransportError:
                return False
            return True

        poll(answers, timeout, f"{self.kind} serving {self.target}")

    def stop(self) -> None:
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            for pid in self._children:
                try:
                    child = psutil.Process(pid)
                    if child.ppid() in (self.process.pid, 1):
                        child.kill()
                except psutil.NoSuchProcess:
                    pass
            self._log.close()
            os.unlink(self.log_path)


@pytest.fixture(scope="module")
def start_server() -> Iterator[Callable[[str, str], ServerProcess]]:
    started: list[ServerProcess] = []

    def start(kind: str, target: str) -> ServerProcess:
        server = ServerProcess(kind, target)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()
