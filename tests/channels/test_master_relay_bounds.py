"""The master backend under pressure, on a real master: a publisher floods a
topic while the one worker holding its subscriber has its event loop blocked
(it reads neither its relay socket nor anything else). The master drops what
that worker cannot take (its relay buffer is bounded), keeps its own memory
bounded, and keeps supervising the other worker on time: the flooding worker
is never reported late."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import psutil
import websockets

from tests.system.harness import Master

APP = """
import os, time
from app_server import App, WebSocket

app = App("feed")

@app.websocket("/feed")
async def feed(ws: WebSocket) -> None:
    if not ws.args.get("quiet"):
        await ws.subscribe("feed")
    await ws.send(str(os.getpid()))
    async for message in ws:
        command, *args = message.split()
        if command == "block":
            time.sleep(float(args[0]))  # the whole worker stops: heartbeats and relay
        elif command == "flood":
            n, size = int(args[0]), int(args[1])
            body = "x" * size
            for _ in range(n):
                await ws.app.channels.publish("feed", body)
            await ws.send("flooded")
"""
FLOOD = 12_000
SIZE = 16 * 1024  # 192 MB published while the other worker sleeps
BLOCK_S = 4.0


async def join_two(url: str) -> tuple[int, Any, int, Any]:
    """A subscriber on one worker, and a publisher (not subscribed) on the other."""
    sleeper = await websockets.connect(url, max_size=None)
    blocked = int(await asyncio.wait_for(sleeper.recv(), 10))
    for _ in range(200):
        ws = await websockets.connect(url + "?quiet=1", max_size=None)
        pid = int(await asyncio.wait_for(ws.recv(), 10))
        if pid != blocked:
            return blocked, sleeper, pid, ws
        await ws.close()
    raise AssertionError("connections reached one worker only")


def test_a_flood_towards_a_blocked_worker_neither_grows_the_master_nor_delays_supervision(
    master: Callable[..., Master],
) -> None:
    m = master(["--workers", "2", "--timeout", "30", "app:app"], files={"app.py": APP})
    m.wait_log("all 2 workers ready")
    url = m.url.replace("http", "ws") + "/feed"
    master_proc = psutil.Process(m.pid)

    async def main() -> tuple[int, int]:
        blocked, sleeper, flooder, publisher = await join_two(url)
        before = master_proc.memory_info().rss
        await sleeper.send(f"block {BLOCK_S}")
        await publisher.send(f"flood {FLOOD} {SIZE}")
        peak = before
        done = asyncio.ensure_future(publisher.recv())
        deadline = asyncio.get_running_loop().time() + 120
        while not done.done():  # sample the master's memory while the flood runs
            assert asyncio.get_running_loop().time() < deadline, "the flood did not finish"
            peak = max(peak, master_proc.memory_info().rss)
            await asyncio.wait([done], timeout=0.05)
        assert done.result() == "flooded"
        for ws in (sleeper, publisher):
            await ws.close()
        return flooder, peak - before

    flooder, growth = asyncio.run(main())
    # The blocked worker's share was dropped beyond the relay bound (16 MiB),
    # not queued: the master grew by far less than the 192 MB published.
    assert growth < 48 * 1048576, f"master RSS grew by {growth / 1048576:.1f} MiB"
    # The flooder kept its heartbeats on time through it all (late after 750 ms).
    late = [line for line in m.log().splitlines() if "late:" in line]
    assert not [line for line in late if f"worker {flooder} " in line], late
    # Once the sleeper reads again it gets what fit, then RESYNC (and recovers).
    m.wait_log("fell behind on channel messages", timeout=30)
    # The master's drops are counted in /metrics.
    logged = sum(
        int(line.split(": ")[-1].split()[0])
        for line in m.log().splitlines()
        if "fell behind on channel messages" in line
    )
    body = httpx.get(m.metrics_url + "/metrics", timeout=10).text
    [dropped] = [
        float(line.split()[-1])
        for line in body.splitlines()
        if line.startswith('app_server_channel_messages_total{direction="dropped"}')
    ]
    assert logged > 0 and dropped >= logged, (logged, dropped)
    print(f"master RSS growth {growth / 1048576:.1f} MiB; late lines: {late}")


DEAF_APP = """
import os
from app_server import App, WebSocket

app = App("deaf")

@app.websocket("/feed")
async def feed(ws: WebSocket) -> None:
    await ws.subscribe("feed")
    await ws.send(str(os.getpid()))
    async for message in ws:
        if message == "deaf":
            # This worker keeps running (and heartbeating) but stops reading
            # its relay socket, as a wedged reader task would.
            ws.app.channels.hub.backend._writer.transport.pause_reading()
            await ws.send("deaf now")
        elif message == "flood":  # 8 MB: far more than the relay socket's buffers
            for _ in range(2000):
                await ws.app.channels.publish("feed", "x" * 4096)
            await ws.send("flooded")
"""


def test_a_worker_that_stops_reading_its_relay_is_replaced_as_hung(
    master: Callable[..., Master],
) -> None:
    m = master(["--workers", "2", "--timeout", "2", "app:app"], files={"app.py": DEAF_APP})
    m.wait_log("all 2 workers ready")
    url = m.url.replace("http", "ws") + "/feed"

    async def main() -> int:
        deaf_ws = await websockets.connect(url, max_size=None)
        deaf = int(await asyncio.wait_for(deaf_ws.recv(), 10))
        for _ in range(200):
            other = await websockets.connect(url + "?x=1", max_size=None)
            if int(await asyncio.wait_for(other.recv(), 10)) != deaf:
                break
            await other.close()
        else:
            raise AssertionError("connections reached one worker only")
        await deaf_ws.send("deaf")
        while await asyncio.wait_for(deaf_ws.recv(), 10) != "deaf now":
            pass
        await other.send("flood")
        await asyncio.to_thread(m.wait_log, "has not read its channel messages", 1, 30)
        # the publisher was never held up by the deaf worker: its flood completes
        while await asyncio.wait_for(other.recv(), 30) != "flooded":
            pass
        for ws in (deaf_ws, other):
            await ws.close()
        return deaf

    deaf = asyncio.run(main())
    # replaced like a hung worker: SIGABRT, its stacks, a new worker in its slot
    m.wait_workers(lambda pids: deaf not in pids and len(pids) == 2)
    assert f"worker {deaf} " in m.log().split("has not read its channel messages")[0][-200:]
