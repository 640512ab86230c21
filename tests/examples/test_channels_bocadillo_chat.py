"""examples/channels_bocadillo_chat.py (Bocadillo's chat room on channels) on
a real master with 4 workers: every page on every worker gets every message
in one order; a new page gets the history from channel history."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx

from tests.examples.spread import client, spread
from tests.examples.ws_client import recv_json, run
from tests.system.harness import Master

TARGET = "examples.channels_bocadillo_chat:app"
PER_CLIENT = 15  # 4 pages: 60 chat messages, more than the 50 replayed


async def welcome_pid(ws: Any) -> int:
    message = await recv_json(ws)
    assert message["type"] == "welcome", message
    return int(message["pid"])


async def messages(ws: Any, count: int) -> list[dict]:
    seen: list[dict] = []
    while len(seen) < count:
        message = await recv_json(ws)
        if message["type"] == "message":
            seen.append(message)
    return seen


def test_pages_on_every_worker_and_the_history(chat_master: Callable[..., Master]) -> None:
    m = chat_master(TARGET, workers=4)
    url = f"ws://127.0.0.1:{m.port}/chat"

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=m.url) as http:
            page = await http.get("/")
        assert page.status_code == 200 and 'id="pid"' in page.text

        members = await spread(url, 4, welcome_pid)
        assert {pid for _, pid in members} == set(m.workers())
        clients = [ws for ws, _ in members]

        async def talk(i: int, ws: Any) -> None:
            for n in range(PER_CLIENT):
                await ws.send(json.dumps({"type": "message", "user": f"u{i}", "text": f"t{n}"}))

        total = PER_CLIENT * len(clients)
        views = (
            await asyncio.gather(
                *(talk(i, ws) for i, ws in enumerate(clients)),
                *(messages(ws, total) for ws in clients),
            )
        )[len(clients) :]
        assert all(view == views[0] for view in views)
        assert sorted((v["user"], v["text"]) for v in views[0]) == sorted(
            (f"u{i}", f"t{n}") for i in range(len(clients)) for n in range(PER_CLIENT)
        )
        # Anything that is not a chat message is not relayed.
        await clients[0].send(json.dumps({"type": "typing", "user": "u0"}))

        # A late page on a worker other than the first sender's: the history
        # replays the last 50 entries (chat messages and join markers) and
        # ends with its own join marker.
        late_pid = members[0][1]
        while late_pid == members[0][1]:
            late = await client(url)
            late_pid = await welcome_pid(late)
            if late_pid == members[0][1]:
                await late.close()
        history = [await recv_json(late) for _ in range(50)]
        assert history[-1] == {"type": "joined"}
        replayed = [entry for entry in history if entry["type"] == "message"]
        # Chat messages plus this page's marker and the markers of the
        # extra connections made to land on other workers fill the 50.
        assert replayed == views[0][-len(replayed) :]
        assert len(replayed) >= 40  # join markers after the last message are few
        await clients[2].send(json.dumps({"type": "message", "user": "u2", "text": "live"}))
        for ws in (late, clients[0]):
            assert await messages(ws, 1) == [{"type": "message", "user": "u2", "text": "live"}]
        for ws in [*clients, late]:
            await ws.close()

    run(scenario())
