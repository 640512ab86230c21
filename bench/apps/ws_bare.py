"""A bare uvloop WebSocket server (no framework, no ASGI): a ceiling reference.

Not a peer: it shows what the loop and the kernel cost on their own, so that
the load generator (bench/ws_load.py) can be shown not to be the bottleneck.
Optional server ``ws_bare`` in bench/ws_run.py (run by default as a reference).

  GET /echo (Upgrade)   echoes every text/binary message back
  GET /bcast (Upgrade)  a message from any connection is sent to every open
                        /bcast connection (the sender included), framed once
  GET / (plain HTTP)    200 "ok" (readiness probe), then close

It handles only what the benchmark sends: unfragmented client frames up to
16 MiB, ping (answered with pong) and close. Not a general server.

    python bench/apps/ws_bare.py --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import signal

import uvloop

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_MAX = 16 * 1024 * 1024

BCAST: set[asyncio.Transport] = set()


def frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


def unmask(mask: bytes, data: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


class Proto(asyncio.Protocol):
    __slots__ = ("transport", "buf", "upgraded", "bcast")

    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""
        self.upgraded = False
        self.bcast = False

    def connection_lost(self, exc):
        BCAST.discard(self.transport)

    def data_received(self, data):
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                if len(buf) > 65536:
                    self.transport.close()
                return
            self._handshake(buf[:end])
            buf = buf[end + 4:]
            if not self.upgraded:
                return
        self.buf = self._frames(buf)

    def _handshake(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        key = headers.get(b"sec-websocket-key")
        path = parts[1] if len(parts) == 3 else b""
        if key is None or headers.get(b"upgrade", b"").lower() != b"websocket":
            self.transport.write(_OK if path == b"/" else _NOT_FOUND)
            self.transport.close()
            return
        if path not in (b"/echo", b"/bcast"):
            self.transport.write(_NOT_FOUND)
            self.transport.close()
            return
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.upgraded = True
        if path == b"/bcast":
            self.bcast = True
            BCAST.add(self.transport)

    def _frames(self, buf: bytes) -> bytes:
        i, n = 0, len(buf)
        while n - i >= 2:
            b0, b1 = buf[i], buf[i + 1]
            length = b1 & 0x7F
            pos = i + 2
            if length == 126:
                if n - pos < 2:
                    break
                length = int.from_bytes(buf[pos:pos + 2], "big")
                pos += 2
            elif length == 127:
                if n - pos < 8:
                    break
                length = int.from_bytes(buf[pos:pos + 8], "big")
                pos += 8
            if length > _MAX or not b1 & 0x80 or not b0 & 0x80:
                self.transport.close()  # oversized, unmasked or fragmented
                return b""
            if n - pos < length + 4:
                break
            payload = unmask(buf[pos:pos + 4], buf[pos + 4:pos + 4 + length])
            i = pos + 4 + length
            opcode = b0 & 0x0F
            if opcode in (1, 2):
                out = frame(opcode, payload)
                if self.bcast:
                    for transport in BCAST:
                        transport.write(out)
                else:
                    self.transport.write(out)
            elif opcode == 9:
                self.transport.write(frame(10, payload))
            elif opcode == 8:
                self.transport.write(frame(8, payload[:2]))
                self.transport.close()
                return b""
        return buf[i:]


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(Proto, host, port, backlog=4096)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvloop.run(main(args.host, args.port))
