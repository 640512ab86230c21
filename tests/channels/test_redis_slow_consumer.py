"""One slow reader among 100 subscribers of a Redis-backed topic, on a real
master with one worker: the slow one is closed with 1013 (and logged); the
other 99 keep at least 90 % of the rate they get without it, and the
worker's RSS grows by no more than WEBSOCKET_MAX_SEND_BUFFER + 10 MiB."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import psutil
import websockets

from tests.channels.conftest import RedisProcess, flush
from tests.system.harness import Master

APP = """
from app_server import App, Request, WebSocket

app = App("feed")

@app.websocket("/sub")
async def sub(ws: WebSocket) -> None:
    await ws.subscribe("feed")
    await ws.send("ready")
    async for _ in ws:
        pass

@app.route("/burst", methods=["POST"])
async def burst(request: Request):
    n = int(request.args.get("n"))
    size = int(request.args.get("size"))
    for i in range(n):
        await request.app.channels.publish("feed", str(i).rjust(size, "x"))
    return {"sent": n}
"""
MAX_SEND_BUFFER = 256 * 1024
MESSAGES = 1500
SIZE = 2048  # 3 MB per subscriber in each phase
ROUNDS = 3


def slow_subscriber(port: int) -> socket.socket:
    """Subscribes, then never reads: a tiny receive window keeps the kernel from absorbing much."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /sub HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def phase(url: str, clients: list[Any]) -> float:
    """Publish MESSAGES; the rate (messages/s per client) at which all 99 got them all."""

    async def drain(ws: Any) -> None:
        for _ in range(MESSAGES):
            await asyncio.wait_for(ws.recv(), 30)

    started = time.monotonic()
    async with httpx.AsyncClient(timeout=60) as http:
        results = await asyncio.gather(
            http.post(f"{url}/burst", params={"n": MESSAGES, "size": SIZE}),
            *(drain(c) for c in clients),
        )
    assert results[0].json() == {"sent": MESSAGES}
    return MESSAGES / (time.monotonic() - started)


def test_one_slow_reader_among_100(
    redis_server: RedisProcess, master: Callable[..., Master]
) -> None:
    flush(redis_server)
    m = master(
        [
            "--workers",
            "1",
            "--channels",
            redis_server.url,
            "--ws-max-send-buffer",
            str(MAX_SEND_BUFFER),
            "--ws-ping-interval",
            "off",
            "--no-access-log",
            "app:app",
        ],
        files={"app.py": APP},
    )
    m.wait_log("listening on")
    [worker] = m.wait_workers(lambda pids: len(pids) == 1)
    ws_url = f"ws://127.0.0.1:{m.port}/sub"

    async def main() -> tuple[float, float, int, list[int]]:
        clients = []
        for _ in range(99):
            ws = await websockets.connect(ws_url, max_size=None)
            assert await ws.recv() == "ready"
            clients.append(ws)
        await phase(m.url, clients)  # warm-up: every buffer at its working size
        # Alternate phases without and with a (new) slow reader and compare
        # the best of each: other load on the machine then affects both alike.
        without, with_slow, slows = [], [], []
        rss_before = psutil.Process(worker).memory_info().rss
        growth = 0
        for _ in range(ROUNDS):
            without.append(await phase(m.url, clients))
            slows.append(await asyncio.to_thread(slow_subscriber, m.port))
            with_slow.append(await phase(m.url, clients))
            rss = psutil.Process(worker).memory_info().rss
            growth = max(growth, rss - rss_before)
        await asyncio.to_thread(m.wait_log, "closing a slow WebSocket subscriber", ROUNDS)
        for ws in clients:
            await ws.close()
        # Each slow one reads at last: what was queued, then Close 1013.
        codes = []
        for slow in slows:
            slow.settimeout(10)
            data = bytearray()
            while part := await asyncio.to_thread(slow.recv, 65536):
                data += part
            slow.close()
            close_at = data.rfind(b"\x88\x0f")  # Close frame of 15 bytes: 1013, "slow consumer"
            assert close_at > 0
            codes.append(int.from_bytes(data[close_at + 2 : close_at + 4], "big"))
        print("rounds without", [round(r) for r in without], "with", [round(r) for r in with_slow])
        return max(without), max(with_slow), growth, codes

    without, with_slow, growth, codes = asyncio.run(main())
    print(
        f"rate without the slow reader {without:.0f} msg/s, with it {with_slow:.0f} msg/s; "
        f"worker RSS growth {growth / 2**20:.1f} MiB"
    )
    assert codes == [1013] * ROUNDS
    assert with_slow >= 0.9 * without, (with_slow, without)
    assert growth <= MAX_SEND_BUFFER + 10 * 2**20, growth
