"""Sanic's multi-room chat, rewritten for many workers with channels.

examples/ws_chat_rooms.py keeps each room in a process-local set: correct
with one worker, but under ``--workers N`` a message reaches only the
clients on the sender's worker. Here a room is the topic ``room:<room_id>``:
``app.channels.publish`` reaches every subscriber in every worker (and on
every host with ``--channels redis://...``), all in one order.

Differences from the seed, all caused by the move to channels:

* the welcome message carries the worker's pid (so a client, or a test,
  can see which worker it landed on) and is sent once the subscription is
  live: whatever is published after the welcome reaches this client;
* the sender gets its own chat message back, in the room's order;
* ``GET /api/rooms/<room_id>`` answers the room's subscriber count over all
  workers (a list of every room would need a registry shared by the
  workers; the seed's ``/api/rooms`` only saw its own worker's rooms).

    app-server --workers 4 examples.channels_chat_rooms:app
    # ws://127.0.0.1:8000/ws/chat/<room_id>  and  GET /api/rooms/<room_id>
"""

from __future__ import annotations

import json as json_lib
import os
from typing import Any

from app_server import App, Request, WebSocket, json
from app_server.exceptions import ChannelUnavailable

app = App("ChatApp")


def room_topic(room_id: str) -> str:
    return f"room:{room_id}"


@app.websocket("/ws/chat/<room_id>")
async def chat_room(request: Request, ws: WebSocket, room_id: str) -> None:
    """Multi-room chat WebSocket handler."""
    topic = room_topic(room_id)
    # Announced before subscribing: the joiner does not get its own notice
    # (the seed excluded it explicitly).
    await app.channels.publish(topic, {
        "type": "user_joined",
        "message": "A user joined the room",
        "room": room_id,
    })
    await ws.subscribe(topic)
    await ws.send(json_lib.dumps({
        "type": "system",
        "message": f"Welcome to chat room {room_id}",
        "room": room_id,
        "pid": os.getpid(),
    }))
    try:
        async for message in ws:
            try:
                data: Any = json_lib.loads(message)
            except json_lib.JSONDecodeError:
                await ws.send(json_lib.dumps({"type": "error", "message": "Invalid JSON format"}))
                continue
            if isinstance(data, dict) and data.get("type") == "chat":
                await app.channels.publish(topic, {
                    "type": "chat",
                    "message": data.get("message", ""),
                    "user": data.get("user", "Anonymous"),
                    "room": room_id,
                })
    finally:
        # The closed WebSocket has already left the topic; tell the others.
        try:
            await app.channels.publish(topic, {
                "type": "user_left",
                "message": "A user left the room",
                "room": room_id,
            })
        except ChannelUnavailable:
            pass  # the backend is reconnecting: the notice is lost, nothing else


@app.route("/api/rooms/<room_id>")
async def room_info(request: Request, room_id: str) -> Any:
    """Clients in a room, counted over every worker."""
    return json({"room": room_id, "clients": await app.channels.count(room_topic(room_id))})


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
