"""A real Redis for the channel tests: Debian's redis-server, started by the
test session on a free port in a temporary directory (never the system
service), stopped by its pid even when a test fails.

``redis_server`` is one server for the whole session. Tests that kill and
restart Redis make their own ``RedisProcess`` (``redis_factory``).
tests/channels/setup.sh installs redis-server; without it these tests fail
with a message naming the script.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.system.harness import master  # noqa: F401  (the fixture, for real masters)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """One redis-server child: ``start``, ``kill`` (SIGKILL), ``restart``."""

    def __init__(self, directory: Path, persistent: bool = False) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            pytest.fail("redis-server is not installed: run tests/channels/setup.sh")
        self.binary = binary
        self.directory = directory
        self.persistent = persistent
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
            if self.persistent
            else ["--appendonly", "no", "--save", ""]
        )
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
                "--logfile",
                str(self.directory / "redis.log"),
                *persistence,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, timeout=10)

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    with tempfile.TemporaryDirectory(prefix="app-server-redis-") as tmp:
        server = RedisProcess(Path(tmp))
        try:
            server.start()
            yield server
        finally:
            server.kill()


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisProcess]]:
    made: list[RedisProcess] = []
    with tempfile.TemporaryDirectory(prefix="app-server-redis-") as tmp:

        def make(persistent: bool = False) -> RedisProcess:
            directory = Path(tmp) / str(len(made))
            directory.mkdir()
            server = RedisProcess(directory, persistent)
            made.append(server)
            server.start()
            return server

        try:
            yield make
        finally:
            for server in made:
                server.kill()


def flush(server: RedisProcess) -> None:
    """Empty the session server between tests (each test uses its own topics anyway)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(b"FLUSHALL\r\n")
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not sock.recv(64):
            pass
