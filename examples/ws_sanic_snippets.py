"""The Sanic seed's WebSocket API snippets, on app-server.

The snippets from the Sanic seed's API sections (the usage examples proper
are ws_echo_page, ws_chat_rooms, ws_data_stream and ws_secure), each on its
own path, with only the imports and the app construction changed. The
helpers the seed leaves undefined are small functions here.

* ``/ws``                 the decorator's docstring example (greet, read one message);
* ``/added``              the same handler registered with ``add_websocket_route``;
* ``/ws/subprotocols``    subprotocol negotiation (``chat`` or ``notification``);
* ``/ws/authenticated``   Authorization header checked in the handler (close 1008).

    python -m examples.ws_sanic_snippets     # ws://127.0.0.1:8000/ws
"""

from __future__ import annotations

from app_server import App

app = App("SanicSnippets")

TOKENS = {"Bearer good-token": {"name": "ada"}}


class AuthenticationError(Exception):
    pass


async def validate_websocket_token(auth_header: str) -> dict:
    user = TOKENS.get(auth_header)
    if user is None:
        raise AuthenticationError(auth_header)
    return user


async def handle_chat_protocol(ws) -> None:
    async for msg in ws:
        await ws.send(f"chat: {msg}")


async def handle_notification_protocol(ws) -> None:
    await ws.send("notification: subscribed")


async def handle_authenticated_websocket(request, ws) -> None:
    await ws.send(f"Hello {request.ctx.user['name']}")
    async for msg in ws:
        await ws.send(f"{request.ctx.user['name']}: {msg}")


@app.websocket("/ws")
async def websocket_handler(request, ws):
    await ws.send("Hello WebSocket!")
    msg = await ws.recv()
    print(f"Received: {msg}")


app.add_websocket_route(websocket_handler, "/added", name="added")


@app.websocket("/ws/subprotocols", subprotocols=["chat", "notification"])
async def websocket_with_subprotocols(request, ws):
    """
    WebSocket handler with subprotocol negotiation.
    The client can request specific subprotocols during handshake.
    The server selects the first supported subprotocol.
    """
    selected_protocol = ws.subprotocol

    if selected_protocol == "chat":
        await handle_chat_protocol(ws)
    elif selected_protocol == "notification":
        await handle_notification_protocol(ws)
    else:
        await ws.close(code=1002, reason="Unsupported subprotocol")


@app.websocket("/ws/authenticated")
async def authenticated_websocket(request, ws):
    """
    WebSocket handler with authentication.
    Authentication is performed during the initial HTTP handshake
    using headers, query parameters, or other request data.
    """
    # Authenticate using request headers
    auth_header = request.headers.get("Authorization")
    if not auth_header:
        await ws.close(code=1008, reason="Authentication required")
        return

    try:
        user = await validate_websocket_token(auth_header)
        request.ctx.user = user
    except AuthenticationError:
        await ws.close(code=1008, reason="Invalid authentication")
        return

    # Continue with authenticated WebSocket handling
    await handle_authenticated_websocket(request, ws)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
