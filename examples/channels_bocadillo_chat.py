"""Bocadillo's chat room, rewritten for many workers with channels.

examples/ws_bocadillo_chat.py keeps its clients and history in module-level
collections: correct with one worker only. Here every client subscribes to
the topic ``chat``; a message is published once and reaches every page on
every worker, and the history a new page gets is the topic's channel history
(kept by the backend, the same for every worker).

Differences from the seed, all caused by the move to channels: the server
first sends ``{"type": "welcome", "pid": ...}`` (the worker's pid, shown by
the page, so one can see pages on different workers talk); each join is
published as ``{"type": "joined"}`` and marks where the joiner's history
ends and live messages begin; the page (templates/channels_chat.html) shows
the pid and ignores ``joined``. The history holds the last 50 chat messages
and join markers (the seed's grew without bound).

    app-server --workers 4 examples.channels_bocadillo_chat:app
    # then open http://127.0.0.1:8000/ in two windows
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from app_server import App, Request, WebSocket, file
from app_server.channels.history import SEQ_LIMIT
from app_server.exceptions import ChannelGap

app = App()

TEMPLATES = Path(__file__).parent / "templates"
TOPIC = "chat"
REPLAY = 50
# Twice the replay: joins racing with this one cannot trim its replay away.
app.channels.history(TOPIC, size=2 * REPLAY)


@app.websocket_route("/chat", value_type="json")
async def chat(ws: WebSocket) -> None:
    await ws.send({"type": "welcome", "pid": os.getpid()})
    joined = await app.channels.publish(TOPIC, {"type": "joined"})
    assert joined is not None  # the topic keeps history
    try:
        # Offsets grow by one per message within an epoch whose first
        # message has sequence 1: the last REPLAY messages up to the join.
        await ws.subscribe(TOPIC, since=joined - min(REPLAY, joined % SEQ_LIMIT))
    except ChannelGap:
        await ws.subscribe(TOPIC)  # the history moved on meanwhile: live only

    message: Any
    async for message in ws:
        if isinstance(message, dict) and message.get("type") == "message":
            await app.channels.publish(TOPIC, message)


@app.route("/")
async def index(request: Request) -> Any:
    return file(TEMPLATES / "channels_chat.html")


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
