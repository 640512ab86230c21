"""The master backend on a real master with real workers: every worker's
subscribers get each message once, in one order; a SIGKILLed worker's
subscriptions leave the master at once; history lives in the master, so a
client that reconnects with its last offset after a rolling reload misses
nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from typing import Any

import httpx
import psutil
import websockets

from tests.system.harness import Master, poll

APP = """
from app_server import App, Request, WebSocket
from app_server.exceptions import ChannelGap

app = App("chat")
app.channels.history("room:*", size=1000)

@app.websocket("/room/<name>")
async def room(ws: WebSocket, name: str) -> None:
    since = ws.args.get("since")
    try:
        await ws.subscribe(f"room:{name}", since=int(since) if since else None,
                           envelope=lambda topic, offset, data: {"o": offset, "d": data})
    except ChannelGap:
        await ws.close(4000, "gap")
        return
    await ws.send({"ready": True, "pid": __import__("os").getpid()})
    async for message in ws:
        await ws.app.channels.publish(f"room:{name}", message)

@app.route("/count/<topic>")
async def count(request: Request, topic: str):
    return {"count": await request.app.channels.count(topic), "pid": __import__("os").getpid()}

@app.route("/publish/<topic>", methods=["POST"])
async def publish(request: Request, topic: str):
    return {"offset": await request.app.channels.publish(topic, request.body.decode())}
"""


async def join(url: str) -> tuple[Any, int]:
    ws = await websockets.connect(url, max_size=None)
    hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert hello["ready"] is True
    return ws, int(hello["pid"])


async def collect(ws: Any, n: int) -> list[dict[str, Any]]:
    got = []
    while len(got) < n:
        got.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    return got


async def join_on_every_worker(url: str, workers: int, per_worker: int) -> dict[int, list[Any]]:
    """Clients until each worker has ``per_worker`` (the kernel spreads connections)."""
    by_pid: dict[int, list[Any]] = {}
    extra: list[Any] = []
    for _ in range(400):
        ws, pid = await join(url)
        group = by_pid.setdefault(pid, [])
        (group if len(group) < per_worker else extra).append(ws)
        if len(by_pid) == workers and all(len(g) >= per_worker for g in by_pid.values()):
            break
    for ws in extra:
        await ws.close()
    assert len(by_pid) == workers, f"connections reached {len(by_pid)} of {workers} workers"
    return by_pid


def start(master: Callable[..., Master], workers: int, *extra: str) -> Master:
    m = master(["--workers", str(workers), *extra, "app:app"], files={"app.py": APP})
    m.wait_log(f"all {workers} workers ready")
    return m


def test_every_worker_gets_every_message_once_in_one_order(master: Callable[..., Master]) -> None:
    m = start(master, 4)
    ws_url = m.url.replace("http", "ws") + "/room/a"

    async def main() -> list[list[dict[str, Any]]]:
        clients = [c for g in (await join_on_every_worker(ws_url, 4, 2)).values() for c in g]
        # each client publishes 20 messages at once: 8 concurrent publishers on 4 workers
        await asyncio.gather(
            *(
                asyncio.gather(*(c.send(f"{i}-{k}") for k in range(20)))
                for i, c in enumerate(clients)
            )
        )
        got = await asyncio.gather(*(collect(c, 160) for c in clients))
        for c in clients:
            await c.close()
        return got

    got = asyncio.run(main())
    first = got[0]
    assert sorted(x["d"] for x in first) == sorted(f"{i}-{k}" for i in range(8) for k in range(20))
    for other in got[1:]:
        assert other == first  # every worker: the same messages, offsets and order
    offsets = [x["o"] for x in first]
    assert offsets == sorted(offsets) and offsets[-1] - offsets[0] == 159


def test_a_sigkilled_workers_subscriptions_leave_the_master(master: Callable[..., Master]) -> None:
    m = start(master, 2)
    ws_url = m.url.replace("http", "ws") + "/room/k"

    def count() -> tuple[int, int]:
        answer = httpx.get(f"{m.url}/count/room:k", timeout=5).json()
        return int(answer["count"]), int(answer["pid"])

    async def main() -> None:
        by_pid = await join_on_every_worker(ws_url, 2, 3)
        assert (await asyncio.to_thread(count))[0] == 6
        victim, survivor = list(by_pid)
        os.kill(victim, signal.SIGKILL)
        await asyncio.to_thread(
            poll,
            lambda: _dead(victim),
            10,
            "the worker's death",
        )
        # Its relay socket's EOF is read in the master's next wake, before it
        # answers anything else: at the latest the second count after the
        # death (the first may share that wake) no longer includes it. That is
        # well within one heartbeat interval.
        seen = []
        for _ in range(2):
            n, answered_by = await asyncio.to_thread(count)
            assert answered_by != victim
            seen.append(n)
        assert seen[-1] == 3, seen
        # the other worker's subscribers are unaffected: they still get messages
        await by_pid[survivor][0].send("after the kill")
        for ws in by_pid[survivor]:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert message["d"] == "after the kill"
        for group in by_pid.values():
            for ws in group:
                await ws.close()

    asyncio.run(main())


def channel_metrics(m: Master) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    body = httpx.get(m.metrics_url + "/metrics", timeout=10).text
    found = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name.startswith("app_server_channel_"):
                suffix = "".join(f"{{{v}}}" for v in sample.labels.values())
                found[sample.name + suffix] = sample.value
    return found


def test_channel_metrics_count_exactly_and_survive_a_reload(master: Callable[..., Master]) -> None:
    m = start(master, 2)
    zero = {
        "app_server_channel_messages_total{published}": 0.0,
        "app_server_channel_messages_total{delivered}": 0.0,
        "app_server_channel_messages_total{dropped}": 0.0,
        "app_server_channel_slow_closes_total": 0.0,
        "app_server_channel_subscriptions": 0.0,
        "app_server_channel_backend_up": 1.0,
    }
    assert channel_metrics(m) == zero  # every name from the start, topics never a label
    ws_url = m.url.replace("http", "ws") + "/room/m"

    async def main() -> None:
        by_pid = await join_on_every_worker(ws_url, 2, 3)
        clients = [ws for group in by_pid.values() for ws in group]
        expected = {**zero, "app_server_channel_subscriptions": 6.0}
        assert await asyncio.to_thread(channel_metrics, m) == expected
        async with httpx.AsyncClient() as http:
            for i in range(10):
                r = await http.post(f"{m.url}/publish/room:m", content=f"n{i}")
                assert r.json()["offset"] is not None
        for ws in clients:
            assert [x["d"] for x in await collect(ws, 10)] == [f"n{i}" for i in range(10)]
        expected = {
            **expected,
            "app_server_channel_messages_total{published}": 10.0,
            "app_server_channel_messages_total{delivered}": 60.0,
        }
        assert await asyncio.to_thread(channel_metrics, m) == expected
        for ws in clients:
            await ws.close()

    asyncio.run(main())
    # Counters stay monotonic when the workers are replaced; the gauge drops.
    m.signal(signal.SIGHUP)
    m.wait_log("reload complete")
    after = {
        **zero,
        "app_server_channel_messages_total{published}": 10.0,
        "app_server_channel_messages_total{delivered}": 60.0,
    }
    poll(lambda: channel_metrics(m) == after, 10, f"{after} after the reload")


CLIENTS = 50
RELOADS = 5


def test_fifty_clients_lose_nothing_through_five_rolling_reloads(
    master: Callable[..., Master],
) -> None:
    """Publishers publish throughout; every reload closes the clients with 1012
    and each reconnects with its last offset: at the end every client has every
    message after the first, once, in one and the same order."""
    m = start(master, 4)
    base = m.url.replace("http", "ws") + "/room/r"
    first = httpx.post(f"{m.url}/publish/room:r", content="start", timeout=10).json()["offset"]

    async def client(
        received: list[tuple[int, str]], done: asyncio.Event, closes: list[int]
    ) -> None:
        last = first
        while True:
            try:
                ws = await websockets.connect(f"{base}?since={last}", open_timeout=10)
            except (OSError, websockets.InvalidStatus, TimeoutError):
                await asyncio.sleep(0.02)  # between a reload's old and new listener: retry
                continue
            try:
                async for raw in ws:
                    message = json.loads(raw)
                    if "ready" in message:
                        continue
                    received.append((message["o"], message["d"]))
                    last = message["o"]
                    if message["d"] == "end":
                        await ws.close()
                        done.set()
                        return
            except websockets.ConnectionClosed:
                pass
            code = ws.close_code if ws.close_code is not None else -1
            assert code != 4000, "ChannelGap: the history did not reach back"
            closes.append(code)

    async def publisher(name: str, stop: asyncio.Event, acked: list[tuple[int, str]]) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            i = 0
            while not stop.is_set():
                data = f"{name}-{i}"
                try:
                    r = await http.post(f"{m.url}/publish/room:r", content=data)
                except httpx.HTTPError:
                    continue  # a connection closed by a draining worker: not acknowledged
                if r.status_code == 200:
                    acked.append((r.json()["offset"], data))
                i += 1
                await asyncio.sleep(0.005)

    async def main() -> tuple[list[list[tuple[int, str]]], list[tuple[int, str]], list[int]]:
        received: list[list[tuple[int, str]]] = [[] for _ in range(CLIENTS)]
        dones = [asyncio.Event() for _ in range(CLIENTS)]
        closes: list[int] = []
        tasks = [
            asyncio.ensure_future(client(r, d, closes))
            for r, d in zip(received, dones, strict=True)
        ]
        await asyncio.to_thread(poll, lambda: _count(m, "room:r") == CLIENTS, 30, "joined")
        stop = asyncio.Event()
        acked: list[tuple[int, str]] = []
        publishers = [asyncio.ensure_future(publisher(n, stop, acked)) for n in ("p", "q")]
        for n in range(1, RELOADS + 1):
            await asyncio.to_thread(poll, lambda want=40 * n: len(acked) >= want, 30, "publishes")
            m.signal(signal.SIGHUP)
            await asyncio.to_thread(m.wait_log, "reload complete", n, 60)
        await asyncio.to_thread(poll, lambda: len(acked) >= 40 * (RELOADS + 1), 30, "publishes")
        stop.set()
        await asyncio.gather(*publishers)
        httpx.post(f"{m.url}/publish/room:r", content="end", timeout=10)
        await asyncio.wait_for(asyncio.gather(*(d.wait() for d in dones)), 60)
        await asyncio.gather(*tasks)
        return received, acked, closes

    received, acked, closes = asyncio.run(main())
    assert closes.count(1012) >= CLIENTS  # they really were closed by the reloads
    reference = received[0]
    offsets = [o for o, _ in reference]
    assert offsets == list(range(first + 1, first + 1 + len(offsets)))  # no gap, no duplicate
    assert set(acked) <= set(reference)  # every acknowledged message arrived
    for other in received[1:]:
        assert other == reference  # the same messages in the same order everywhere


def _count(m: Master, topic: str) -> int:
    try:
        return int(httpx.get(f"{m.url}/count/{topic}", timeout=5).json()["count"])
    except httpx.HTTPError:
        return -1


def _dead(pid: int) -> bool:
    """Gone or a zombie; reaped between the two looks counts as gone."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
