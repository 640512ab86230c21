"""examples/ws_chat_rooms.py (Sanic multi-room chat + /api/rooms) over real sockets."""

from __future__ import annotations

import json

import httpx

from examples import ws_chat_rooms
from examples.ws_chat_rooms import app
from tests.conftest import serve_app
from tests.examples.ws_client import poll, recv_json, run, ws_connect


def welcome(room: str) -> dict:
    return {"type": "system", "message": f"Welcome to chat room {room}", "room": room}


def chat(room: str, message: str, user: str = "Anonymous") -> dict:
    return {"type": "chat", "message": message, "user": user, "room": room}


def test_rooms_broadcast_only_to_their_members_and_are_listed() -> None:
    async def rooms(http: httpx.AsyncClient) -> dict:
        response = await http.get("/api/rooms")
        assert response.status_code == 200
        return response.json()

    async def scenario(server) -> None:
        async with (
            httpx.AsyncClient(base_url=server.url) as http,
            ws_connect(server, "/ws/chat/lobby") as a1,
        ):
            assert await recv_json(a1) == welcome("lobby")
            async with (
                ws_connect(server, "/ws/chat/lobby") as a2,
                ws_connect(server, "/ws/chat/games") as b1,
            ):
                assert await recv_json(a2) == welcome("lobby")
                assert await recv_json(b1) == welcome("games")
                joined = await recv_json(a1)
                assert joined == {
                    "type": "user_joined",
                    "message": "A user joined the room",
                    "room": "lobby",
                }

                listed = await rooms(http)
                assert sorted(listed["rooms"]) == ["games", "lobby"]
                assert listed["total_clients"] == 3

                # A chat message reaches every member of the room, the sender included.
                await a1.send(json.dumps({"type": "chat", "message": "hi", "user": "ann"}))
                assert await recv_json(a1) == chat("lobby", "hi", "ann")
                assert await recv_json(a2) == chat("lobby", "hi", "ann")

                # ...and nobody elsewhere: b1's next message is its own room's chat.
                await b1.send(json.dumps({"type": "chat", "message": "gg"}))
                assert await recv_json(b1) == chat("games", "gg")

                # Bad JSON gets an error for the sender only; unknown types are ignored.
                await a2.send("{not json")
                assert await recv_json(a2) == {"type": "error", "message": "Invalid JSON format"}
                await a2.send(json.dumps({"type": "typing"}))
                await a2.send(json.dumps({"type": "chat", "message": "after"}))
                assert await recv_json(a1) == chat("lobby", "after")
                assert await recv_json(a2) == chat("lobby", "after")

                # A client that vanishes without a close frame still leaves its room.
                b1.transport.abort()
                await a2.close()
                left = await recv_json(a1)
                assert left == {
                    "type": "user_left",
                    "message": "A user left the room",
                    "room": "lobby",
                }
                listed = await poll(lambda: _listed_when(rooms(http), total=1))
                assert listed["rooms"] == ["lobby"]

            await a1.close()
            listed = await poll(lambda: _listed_when(rooms(http), total=0))
            assert listed["rooms"] == []
            assert ws_chat_rooms.chat_rooms == {}

    with serve_app(app) as server:
        run(scenario(server))


async def _listed_when(listing, total: int) -> dict | None:
    value = await listing
    return value if value["total_clients"] == total else None


def test_room_name_comes_from_the_path() -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/ws/chat/room-42") as ws:
            assert await recv_json(ws) == welcome("room-42")
            await ws.send(json.dumps({"type": "chat", "message": "x", "user": "u"}))
            assert await recv_json(ws) == chat("room-42", "x", "u")
            await ws.close()
            assert ws.close_code == 1000

    with serve_app(app) as server:
        run(scenario(server))
