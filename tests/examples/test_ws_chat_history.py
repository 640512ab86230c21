"""examples/ws_chat_history.py (BlackSheep chat with history) over real sockets."""

from __future__ import annotations

import json

from examples.ws_chat_history import app
from tests.conftest import serve_app
from tests.examples.ws_client import expect_close, recv_json, run, ws_connect


def without_time(message: dict) -> dict:
    assert isinstance(message.pop("timestamp"), float)
    return message


async def recv_event(ws) -> dict:
    return without_time(await recv_json(ws))


def chat_message(room: str, message: str, user: str = "Anonymous") -> dict:
    return {"type": "chat_message", "room": room, "user": user, "message": message}


def test_join_chat_history_and_leave() -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/chat/r1") as a:
            async with ws_connect(server, "/chat/r1") as b:
                assert await recv_event(a) == {"type": "user_joined", "room": "r1"}

                await a.send(json.dumps({"user": "ann", "message": "hi"}))
                assert await recv_event(b) == chat_message("r1", "hi", "ann")
                await b.send(json.dumps({"message": "yo"}))
                # The sender does not get its own message back: a's next is b's.
                assert await recv_event(a) == chat_message("r1", "yo")

                async with ws_connect(server, "/chat/r1") as c:
                    # History first, oldest first.
                    assert await recv_event(c) == chat_message("r1", "hi", "ann")
                    assert await recv_event(c) == chat_message("r1", "yo")
                    for member in (a, b):
                        assert await recv_event(member) == {"type": "user_joined", "room": "r1"}

                    # Another room shares neither messages nor history.
                    async with ws_connect(server, "/chat/r2") as d:
                        await d.send(json.dumps({"user": "dan", "message": "elsewhere"}))
                        await c.send(json.dumps({"user": "cy", "message": "here"}))
                        assert await recv_event(a) == chat_message("r1", "here", "cy")
                        assert await recv_event(b) == chat_message("r1", "here", "cy")

                for member in (a, b):
                    assert await recv_event(member) == {"type": "user_left", "room": "r1"}
            assert await recv_event(a) == {"type": "user_left", "room": "r1"}

    with serve_app(app) as server:
        run(scenario(server))


def test_a_newcomer_gets_the_last_50_messages() -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/chat/big") as observer:
            async with ws_connect(server, "/chat/big") as sender:
                assert await recv_event(observer) == {"type": "user_joined", "room": "big"}
                for i in range(55):
                    await sender.send(json.dumps({"user": "s", "message": f"m{i}"}))
                # Messages are stored before they are broadcast: once the observer
                # has the last one, the history holds all 55.
                for i in range(55):
                    assert await recv_event(observer) == chat_message("big", f"m{i}", "s")

                async with ws_connect(server, "/chat/big") as newcomer:
                    assert await recv_event(sender) == {"type": "user_joined", "room": "big"}
                    # The join notice goes out after the history, so this comes after it.
                    await sender.send(json.dumps({"user": "s", "message": "marker"}))
                    received = [await recv_event(newcomer) for _ in range(51)]
                    expected = [chat_message("big", f"m{i}", "s") for i in range(5, 55)]
                    assert received == [*expected, chat_message("big", "marker", "s")]

    with serve_app(app) as server:
        run(scenario(server))


def test_a_message_that_is_not_an_object_ends_the_connection_with_1011() -> None:
    # receive_json() gives a list, .get() raises: an error escaping the handler
    # closes with 1011 (Internal Error), and the others still see the user leave.
    async def scenario(server) -> None:
        async with ws_connect(server, "/chat/r3") as a, ws_connect(server, "/chat/r3") as b:
            assert await recv_event(a) == {"type": "user_joined", "room": "r3"}
            await b.send(json.dumps([1, 2]))
            code, _reason = await expect_close(b)
            assert code == 1011
            assert await recv_event(a) == {"type": "user_left", "room": "r3"}

    with serve_app(app) as server:
        run(scenario(server))
