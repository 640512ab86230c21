"""A raw-socket WebSocket client for protocol edge cases: it builds frames by
hand (bad bits, bad opcodes, unmasked, oversized control frames) and reads
the server's frames back exactly as they arrive."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
import zlib


def client_frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    first = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head = bytes((first, mask_bit | n))
    elif n < 65536:
        head = bytes((first, mask_bit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, mask_bit | 127)) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


def deflate_message(data: bytes) -> bytes:
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]


class RawWebSocket:
    def __init__(
        self,
        host: str,
        port: int,
        path: str = "/",
        headers: dict[str, str] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.status, self.headers = self._read_head()

    def _read_head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed during handshake: {self.buffer!r}")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kw: object) -> None:
        self.sock.sendall(client_frame(opcode, payload, **kw))  # type: ignore[arg-type]

    def _need(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._need(2)
        assert not b1 & 0x80, "server frames must not be masked"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._need(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._need(8))
        return bool(b0 & 0x80), b0 & 0x0F, self._need(n)

    def read_until_close(self) -> tuple[int | None, str, list[tuple[int, bytes]]]:
        """Frames up to the server's Close: (code, reason, frames before it)."""
        before = []
        while True:
            _, opcode, payload = self.read_frame()
            if opcode == 0x8:
                if len(payload) >= 2:
                    (code,) = struct.unpack("!H", payload[:2])
                    return code, payload[2:].decode(), before
                return None, "", before
            before.append((opcode, payload))

    def wait_tcp_close(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the TCP connection."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(timeout)
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return True
            except TimeoutError:
                return False
            if not chunk:
                return True
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawWebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
