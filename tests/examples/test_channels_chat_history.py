"""examples/channels_chat_history.py (BlackSheep's chat with history on
channels) on a real master with 4 workers: one order everywhere, and a late
joiner's history is the room's channel history, whatever worker it lands on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from tests.examples.spread import client, spread
from tests.examples.ws_client import recv_json, run
from tests.system.harness import Master

TARGET = "examples.channels_chat_history:app"
PER_CLIENT = 15  # 4 clients: 60 chat messages, more than the 50 replayed


async def welcome_pid(ws: Any) -> int:
    message = await recv_json(ws)
    assert message["type"] == "welcome", message
    return int(message["pid"])


async def read_until(ws: Any, last: Callable[[dict], bool]) -> list[dict]:
    """Every message up to and including the first for which ``last`` holds."""
    seen: list[dict] = []
    while not seen or not last(seen[-1]):
        seen.append(await recv_json(ws))
    return seen


def is_chat(message: dict, user: str, text: str) -> bool:
    return message["type"] == "chat_message" and (message["user"], message["message"]) == (
        user,
        text,
    )


def test_one_order_and_the_late_joiner_history_from_channel_history(
    chat_master: Callable[..., Master],
) -> None:
    m = chat_master(TARGET, workers=4)
    url = f"ws://127.0.0.1:{m.port}/chat/r1"

    async def scenario() -> None:
        members = await spread(url, 4, welcome_pid)
        assert {pid for _, pid in members} == set(m.workers())
        clients = [ws for ws, _ in members]
        # Each member's stream so far ends with its own join (the end of its
        # history); from the last member's join on, everybody is live.
        last_join = (await read_until(clients[-1], lambda e: e["type"] == "user_joined"))[-1]
        for ws in clients[:-1]:
            await read_until(ws, lambda e, j=last_join: e == j)

        async def talk(i: int, ws: Any) -> None:
            for n in range(PER_CLIENT):
                await ws.send(json.dumps({"user": f"u{i}", "message": f"m{n}"}))

        last = [f"u{i}" for i in range(len(clients))]
        views = await asyncio.gather(
            *(talk(i, ws) for i, ws in enumerate(clients)),
            *(read_until_all_said(ws, last) for ws in clients),
        )
        views = views[len(clients) :]
        assert all(view == views[0] for view in views)  # the same events, same order
        chats = [(e["user"], e["message"]) for e in views[0] if e["type"] == "chat_message"]
        assert sorted(chats) == sorted(
            (f"u{i}", f"m{n}") for i in range(len(clients)) for n in range(PER_CLIENT)
        )

        # A late joiner, on a worker other than the first member's.
        late_pid = members[0][1]
        while late_pid == members[0][1]:
            late = await client(url)
            late_pid = await welcome_pid(late)
            if late_pid == members[0][1]:
                await late.close()
        # (Exactly 50: the history may hold other joins, e.g. of the extra
        # connections made to land on another worker.)
        history = [await recv_json(late) for _ in range(50)]
        assert history[-1]["type"] == "user_joined"
        # What the first member saw, up to the late joiner's own join notice,
        # ends with the 50 events the late joiner got from channel history.
        seen = [*views[0], *await read_until(clients[0], lambda e: e == history[-1])]
        assert history == seen[-50:]
        # Then live, no gap, no duplicate: the next chat message is the one sent
        # now from another worker. (Leave notices of the extra connections
        # closed above may come first: they are not chat messages.)
        await clients[1].send(json.dumps({"user": "u1", "message": "after"}))
        for ws in (late, clients[0]):
            event = await recv_json(ws)
            while event["type"] in ("user_joined", "user_left"):
                event = await recv_json(ws)
            assert is_chat(event, "u1", "after"), event
        for ws in [*clients, late]:
            await ws.close()

    async def read_until_all_said(ws: Any, users: list[str]) -> list[dict]:
        """Events until every user's last message has been seen."""
        pending = {(user, f"m{PER_CLIENT - 1}") for user in users}
        seen: list[dict] = []
        while pending:
            event = await recv_json(ws)
            seen.append(event)
            if event["type"] == "chat_message":
                pending.discard((event["user"], event["message"]))
        return seen

    run(scenario())
