"""Integration helpers: the root conftest's ``serve_app`` and a raw HTTP/1.1
client over a real socket.

``RawClient`` keeps a receive buffer so several responses can be read from
one connection (keep-alive, pipelining) and so the test can check that
nothing at all follows an error response (no second response smuggled out of
one request). Socket timeouts are the deadlines; nothing sleeps.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import socket
import sys
import time
from pathlib import Path
from types import ModuleType


def _root_conftest() -> ModuleType:
    # Every conftest.py is imported as the module "conftest", so the root one
    # cannot be imported by name from here; load it once under its own name.
    name = "_app_server_tests_root_conftest"
    module = sys.modules.get(name)
    if module is None:
        path = Path(__file__).resolve().parents[1] / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


_root = _root_conftest()
serve_app = _root.serve_app
wait_until = _root.wait_until
read_until_close = _root.read_until_close
RunningServer = _root.RunningServer


@dataclasses.dataclass
class RawResponse:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes

    def header(self, name: str) -> str | None:
        values = self.getall(name)
        return values[0] if values else None

    def getall(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]


class RawClient:
    """A socket plus a buffer; reads whole responses with a deadline."""

    def __init__(self, sock: socket.socket, timeout: float = 5.0) -> None:
        self.sock = sock
        self.buffer = b""
        self.timeout = timeout
        self.closed_by_peer = False
        sock.settimeout(timeout)

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Read more bytes into the buffer; False at EOF."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete response before the deadline")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        if not chunk:
            self.closed_by_peer = True
            return False
        self.buffer += chunk
        return True

    def _read_until(self, marker: bytes, deadline: float) -> bytes:
        while marker not in self.buffer:
            if not self._fill(deadline):
                raise ConnectionError(f"connection closed before {marker!r}: {self.buffer!r}")
        index = self.buffer.index(marker) + len(marker)
        data, self.buffer = self.buffer[:index], self.buffer[index:]
        return data

    def _read_exact(self, size: int, deadline: float) -> bytes:
        while len(self.buffer) < size:
            if not self._fill(deadline):
                raise ConnectionError(f"connection closed after {len(self.buffer)}/{size} bytes")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def response(self, head_only: bool = False, timeout: float | None = None) -> RawResponse:
        """Read one complete response (a 1xx is returned as its own response)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        head = self._read_until(b"\r\n\r\n", deadline)
        lines = head[:-4].decode("latin-1").split("\r\n")
        version, status_text, *reason = lines[0].split(" ", 2)
        status = int(status_text)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name, value.strip()))
        response = RawResponse(status, reason[0] if reason else "", version, headers, b"", head)
        if head_only or status < 200 or status in (204, 304):
            return response
        te = (response.header("transfer-encoding") or "").lower()
        length = response.header("content-length")
        if te == "chunked":
            response.body = self._read_chunked(deadline)
        elif length is not None:
            response.body = self._read_exact(int(length), deadline)
        else:
            while self._fill(deadline):
                pass
            response.body, self.buffer = self.buffer, b""
        return response

    def _read_chunked(self, deadline: float) -> bytes:
        body = b""
        while True:
            size_line = self._read_until(b"\r\n", deadline)
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                # trailers end with an empty line
                while self._read_until(b"\r\n", deadline) != b"\r\n":
                    pass
                return body
            body += self._read_exact(size, deadline)
            assert self._read_exact(2, deadline) == b"\r\n"

    def at_eof(self, timeout: float = 3.0) -> bool:
        """True when the peer closes within ``timeout`` with nothing more sent."""
        if self.buffer:
            return False
        deadline = time.monotonic() + timeout
        try:
            more = self._fill(deadline)
        except ConnectionResetError:
            self.closed_by_peer = True
            return not self.buffer
        except TimeoutError:
            return False
        return not more and not self.buffer

    def rest_until_close(self, timeout: float = 3.0) -> bytes:
        """Everything the peer sends until it closes (buffer included)."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except ConnectionResetError:
            pass
        data, self.buffer = self.buffer, b""
        return data


def raw_client(server: object, timeout: float = 5.0) -> RawClient:
    return RawClient(server.connect(timeout), timeout)  # type: ignore[attr-defined]


def count_responses(data: bytes) -> int:
    """How many status lines appear at the start of a line in ``data``."""
    count = 1 if data.startswith(b"HTTP/1.") else 0
    return count + data.count(b"\r\nHTTP/1.")
