"""Bocadillo's real-time chat room, on app-server.

Port of the Bocadillo seed's chat room example (the guide's ``app.py`` plus
``templates/index.html``). Bocadillo's providers and templates are not part
of app-server, so the connected clients and the history are module-level
collections (as in Bocadillo's earlier version of this example) and the page
is served as a file. Changes to the page: the WebSocket URL follows
``location.host`` instead of a hard-coded ``localhost:8000``, and messages are
inserted with ``textContent`` rather than ``innerHTML``.

    python -m examples.ws_bocadillo_chat     # then open http://127.0.0.1:8000/ twice
"""

from __future__ import annotations

from pathlib import Path

from app_server import App, file

app = App()

TEMPLATES = Path(__file__).parent / "templates"

clients = set()
history = []


@app.websocket_route("/chat", value_type="json")
async def chat(ws):
    # Register new client
    print("New client:", ws)
    clients.add(ws)

    # Send history of messages.
    for message in history:
        await ws.send(message)

    try:
        # Broadcast incoming messages to all connected clients.
        async for message in ws:
            print("Received:", message)
            history.append(message)
            if message["type"] == "message":
                # app.broadcast replaces the guide's per-client loop
                # (``for client in clients: await client.send(message)``):
                # one JSON encoding, closed clients skipped.
                await app.broadcast(clients, message)
    finally:
        # Make sure we unregister the client in case of unexpected errors.
        # For example, Safari seems to improperly close WebSockets when
        # leaving the page, returning a 1006 close code instead of 1001.
        print("Disconnected:", ws)
        clients.remove(ws)


@app.route("/")
async def index(request):
    return file(TEMPLATES / "index.html")


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
