"""Bocadillo's WebSocket guide, on app-server.

Every snippet of the Bocadillo seed, each on its own path (the guide reuses
``/echo`` and ``/hello`` for its variants), with only the imports and the app
construction changed:

* ``/echo``            the four-line echo (one message, then a normal close);
* ``/echo-all``        the same with ``async for`` over every message;
* ``/echo-events``     the same with raw ASGI events;
* ``/chat/{channel}``  route and query parameters, JSON in and out;
* ``/hello``           ``auto_accept=False`` with explicit accept and close;
* ``/hello-ctx``       ``auto_accept=False`` with ``async with ws``;
* ``/hello-key``       ``reject()`` (HTTP 403) without the ``api-key`` header;
* ``/dangerous``       application close code 4003 at random, else 1000.

The guide's ``/dangerous`` calls ``ws.message()``, which is no Bocadillo (nor
app-server) method; the port uses ``ws.receive()``. The guide's ``...``
placeholders send a greeting.

    python -m examples.ws_bocadillo_echo     # ws://127.0.0.1:8000/echo
"""

from __future__ import annotations

import random

from app_server import App, WebSocket, status

app = App()

BOOM = 4003


@app.websocket_route("/echo")
async def echo(ws):
    message = await ws.receive()
    await ws.send(f"You said: {message}")


@app.websocket_route("/echo-all")
async def echo_all(ws: WebSocket):
    async for message in ws:
        await ws.send(f"You said: {message}")


@app.websocket_route("/echo-events")
async def echo_events(ws):
    event = await ws.receive_event()
    message = event["text"]
    await ws.send_event(
        {"type": "websocket.send", "text": f"You said: {message}"}
    )


@app.websocket_route("/chat/{channel}", value_type="json")
async def chat(ws, channel: str, anonymous: bool = False):
    user = "Anonymous" if anonymous else ws.headers["user"]
    async for message in ws:
        channel_message = {"user": user, "message": message}
        # TODO: send `channel_message` to other clients in the channel…
        await ws.send(channel_message)


@app.websocket_route("/hello", auto_accept=False)
async def hello(ws):
    print("Going to accept connection…")
    await ws.accept()
    await ws.send("Hello, WebSockets!")
    await ws.close()
    print("Connection closed!")


@app.websocket_route("/hello-ctx", auto_accept=False)
async def hello_ctx(ws):
    print("Going to accept connection…")
    async with ws:
        await ws.send("Hello, WebSockets!")
    print("Connection closed normally!")


@app.websocket_route("/hello-key")
async def hello_key(ws):
    if ws.headers.get("api-key") != "s3kr3t":
        await ws.reject()
    async with ws:
        await ws.send("Hello, WebSockets!")  # Proceed with an authorized client


@app.websocket_route("/dangerous")
async def dangerous(ws):
    for _ in range(100):
        await ws.receive()  # the guide: message = await ws.message()
        if random.random() < 0.1:
            await ws.close(BOOM)
            return
        await ws.send("OK")

    # Bocadillo does this automatically, but we can
    # close the connection ourself if we need to.
    await ws.close(status.WS_1000_NORMAL_CLOSURE)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
