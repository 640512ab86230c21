"""examples/channels_chat_rooms.py (Sanic's rooms on channels) on a real
master with 4 workers: clients on every worker see every chat message of
their room, in one order, and nothing of other rooms."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx

from tests.examples.spread import client, spread
from tests.examples.ws_client import recv_json, recv_json_until, run
from tests.system.harness import Master

TARGET = "examples.channels_chat_rooms:app"
PER_CLIENT = 10


async def welcome_pid(ws: Any) -> int:
    message, _notices = await recv_json_until(ws, lambda m: m["type"] == "system")
    return int(message["pid"])


async def chats(ws: Any, count: int) -> list[dict]:
    """The next ``count`` chat messages (notices of others joining or leaving skipped)."""
    seen = []
    while len(seen) < count:
        message = await recv_json(ws)
        if message["type"] == "chat":
            seen.append(message)
    return seen


def test_every_worker_sees_every_message_in_one_order(chat_master: Callable[..., Master]) -> None:
    m = chat_master(TARGET, workers=4)
    workers = set(m.workers())
    url = f"ws://127.0.0.1:{m.port}/ws/chat/lobby"

    async def scenario() -> None:
        # Two clients on each of the 4 workers.
        members = await spread(url, 4, welcome_pid, per_worker=2)
        pids = {pid for _, pid in members}
        assert pids == workers, (pids, workers)
        clients = [ws for ws, _ in members]
        other = await client(f"ws://127.0.0.1:{m.port}/ws/chat/games")
        await welcome_pid(other)
        async with httpx.AsyncClient(base_url=m.url) as http:
            counted = (await http.get("/api/rooms/lobby")).json()
        assert counted == {"room": "lobby", "clients": len(clients)}

        async def talk(i: int, ws: Any) -> None:
            for n in range(PER_CLIENT):
                await ws.send(json.dumps({"type": "chat", "user": f"u{i}", "message": f"m{n}"}))

        total = PER_CLIENT * len(clients)
        received = await asyncio.gather(
            *(talk(i, ws) for i, ws in enumerate(clients)),
            *(chats(ws, total) for ws in clients),
        )
        views = received[len(clients) :]
        first = views[0]
        assert all(view == first for view in views)  # one order everywhere
        # Every message once, each sender's in the order it sent them.
        expected = {
            json.dumps({"type": "chat", "message": f"m{n}", "user": f"u{i}", "room": "lobby"})
            for i in range(len(clients))
            for n in range(PER_CLIENT)
        }
        assert sorted(json.dumps(message) for message in first) == sorted(expected)
        for i in range(len(clients)):
            mine = [msg["message"] for msg in first if msg["user"] == f"u{i}"]
            assert mine == [f"m{n}" for n in range(PER_CLIENT)]

        # The other room got none of it: its own message is the first chat it sees.
        await other.send(json.dumps({"type": "chat", "user": "g", "message": "in games"}))
        assert await chats(other, 1) == [
            {"type": "chat", "message": "in games", "user": "g", "room": "games"}
        ]

        # A client leaving is announced on every worker.
        await clients[0].close()
        for ws in clients[1:]:
            message, _ = await recv_json_until(ws, lambda m: m["type"] != "chat")
            assert message == {
                "type": "user_left",
                "message": "A user left the room",
                "room": "lobby",
            }
        for ws in [*clients[1:], other]:
            await ws.close()

    run(scenario())
