"""A chat app for the channel tests: rooms are topics with history."""

from __future__ import annotations

from typing import Any

from app_server import App, Request, WebSocket
from app_server.exceptions import ChannelGap


def chat_app() -> App:
    app = App("chat")
    app.channels.history("room:*", size=1000)

    @app.websocket("/room/<name>")
    async def room(ws: WebSocket, name: str) -> None:
        since = ws.args.get("since")
        try:
            await ws.subscribe(
                f"room:{name}",
                since=int(since) if since else None,
                envelope=lambda topic, offset, data: {"o": offset, "d": data},
            )
        except ChannelGap:
            await ws.close(4000, "gap")
            return
        await ws.send({"ready": True})
        async for message in ws:
            await ws.app.channels.publish(f"room:{name}", message)

    @app.route("/count/<topic>")
    async def count(request: Request, topic: str) -> Any:
        return {"count": await request.app.channels.count(topic)}

    @app.route("/publish/<topic>", methods=["POST"])
    async def publish(request: Request, topic: str) -> Any:
        return {"offset": await request.app.channels.publish(topic, request.body.decode())}

    return app
