"""Shared fixtures: a real worker server on 127.0.0.1:0, raw-socket helpers,
and ``wait_until`` (poll a condition with a deadline; tests never sleep to
synchronise)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from app_server.settings.model import (
    HttpLimits,
    LogSettings,
    Settings,
    TlsSettings,
    WebSocketLimits,
)
from app_server.workers.entry import loop_factory, serve


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


@dataclasses.dataclass
class RunningServer:
    host: str
    port: int
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.scheme == 'https' else 'ws'}://{self.host}:{self.port}"

    def connect(self, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        return sock

    def raw(self, data: bytes, timeout: float = 5.0) -> bytes:
        """Send raw bytes, read until the server closes (or the timeout)."""
        with self.connect(timeout) as sock:
            sock.sendall(data)
            return read_until_close(sock, timeout)


def read_until_close(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            chunks.append(b"<RESET>")
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


@contextmanager
def serve_app(
    app: Any,
    *,
    tls: TlsSettings | None = None,
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1",),
    access_log: bool = False,
    log_format: str = "text",
    websocket: WebSocketLimits | None = None,
    channels: str = "local",
    interface: str = "auto",
    root_path: str = "",
    **limits: Any,
) -> Iterator[RunningServer]:
    """Run ``app`` on a real listener in a background thread; stop it on exit."""
    settings = Settings(
        interface=interface,
        root_path=root_path,
        http=dataclasses.replace(HttpLimits(), **limits),
        log=LogSettings(access_log=access_log, format=log_format),
        tls=tls,
        forwarded_allow_ips=forwarded_allow_ips,
        websocket=websocket or WebSocketLimits(),
        channels=channels,
    )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        async def main() -> int:
            holder["loop"] = asyncio.get_running_loop()
            holder["stop"] = stop = asyncio.Event()
            return await serve(app, settings, [listener], stop=stop, on_ready=lambda s: ready.set())

        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            try:
                holder["exit"] = runner.run(main())
            except BaseException as exc:  # surfaced to the test below
                holder["error"] = exc
            finally:
                ready.set()

    thread = threading.Thread(target=run, name="test-worker", daemon=True)
    thread.start()
    try:
        if not ready.wait(10):
            raise TimeoutError("test server did not become ready")
        if "error" in holder:
            raise holder["error"]
        yield RunningServer("127.0.0.1", port, "https" if tls else "http")
    finally:
        loop = holder.get("loop")
        if loop is not None and "stop" in holder and thread.is_alive():
            loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(30)
        listener.close()
        if thread.is_alive():
            raise RuntimeError("test server did not stop within 30 s")
