"""The BlackSheep seed's self-contained WebSocket examples, verbatim, on the real BlackSheep.

``app-server examples.asgi.blacksheep_seed_ws:app`` (or ``uvicorn`` the same).
The seed's code blocks are joined in one module with the seed's own imports.
One change is unavoidable: the seed decorates with ``@app.ws(...)``, which no
BlackSheep release has (checked 1.2.18 and 2.6.4); the real decorator is
``@app.router.ws(...)``, so that attribute is the only edit. Only the blocks
that call helpers the seed leaves undefined
(``process_message``, ``broadcast_to_room(room, str)``, ``get_user_notifications``,
the custom JSON functions) are left out. Paths: /ws, /chat, /messages,
/stateful, /validated, /close-codes.
"""

# The seed's blocks are kept as written (their imports where they stand,
# repeated and unused ones too), so lint is told exactly what to pass over:
# ruff: noqa: E402, F401, F811, I001
# mypy: ignore-errors

from blacksheep import Application, WebSocket, WebSocketState
from blacksheep.server.websocket import WebSocketError, WebSocketDisconnectError

app = Application()

# Simple WebSocket endpoint
@app.router.ws("/ws")
async def websocket_handler(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive_text()
            await websocket.send_text(f"Echo: {message}")
    except WebSocketDisconnectError:
        print("Client disconnected")


from blacksheep.server.websocket import WebSocketState, MessageMode

@app.router.ws("/chat")
async def chat_handler(websocket: WebSocket):
    # Accept the WebSocket connection
    await websocket.accept()
    print(f"Connection state: {websocket.state}")  # WebSocketState.CONNECTED

    # Connection information
    client_ip = websocket.scope.get("client", ["unknown"])[0]
    print(f"Client connected from: {client_ip}")

    try:
        # Connection loop
        while websocket.state == WebSocketState.CONNECTED:
            message = await websocket.receive_text()
            await websocket.send_text(f"Received: {message}")
    except WebSocketDisconnectError as e:
        print(f"Client disconnected with code: {e.code}")
    finally:
        # Cleanup when connection ends
        print("Connection closed")


@app.router.ws("/messages")
async def message_handler(websocket: WebSocket):
    await websocket.accept()

    try:
        while True:
            # Receive different message types
            message_type = await websocket.receive()

            if message_type["type"] == "websocket.receive":
                if "text" in message_type:
                    # Text message
                    text = message_type["text"]
                    await websocket.send_text(f"Got text: {text}")
                elif "bytes" in message_type:
                    # Binary message
                    data = message_type["bytes"]
                    await websocket.send_bytes(data)
    except WebSocketDisconnectError:
        pass


from blacksheep.server.websocket import WebSocketState

@app.router.ws("/stateful")
async def stateful_handler(websocket: WebSocket):
    print(f"Initial state: {websocket.state}")  # WebSocketState.CONNECTING

    await websocket.accept()
    print(f"After accept: {websocket.state}")  # WebSocketState.CONNECTED

    try:
        while websocket.state == WebSocketState.CONNECTED:
            message = await websocket.receive_text()

            # Check state before sending
            if websocket.state == WebSocketState.CONNECTED:
                await websocket.send_text(f"Echo: {message}")
            else:
                break

    except WebSocketDisconnectError:
        pass

    print(f"Final state: {websocket.state}")  # WebSocketState.DISCONNECTED


from blacksheep.server.websocket import InvalidWebSocketStateError

@app.router.ws("/validated")
async def validated_handler(websocket: WebSocket):
    try:
        await websocket.accept()

        while True:
            message = await websocket.receive_text()

            # State validation before operations
            if websocket.state != WebSocketState.CONNECTED:
                raise InvalidWebSocketStateError(
                    party="server",
                    current_state=websocket.state,
                    expected_state=WebSocketState.CONNECTED
                )

            await websocket.send_text(f"Processed: {message}")

    except InvalidWebSocketStateError as e:
        print(f"Invalid state: {e.current_state}, expected: {e.expected_state}")
    except WebSocketDisconnectError:
        pass


@app.router.ws("/close-codes")
async def close_codes_handler(websocket: WebSocket):
    await websocket.accept()

    try:
        message = await websocket.receive_text()

        if message == "invalid":
            # Close with specific code
            await websocket.close(code=1003)  # Unsupported data type
        elif message == "policy":
            await websocket.close(code=1008)  # Policy violation
        elif message == "size":
            await websocket.close(code=1009)  # Message too large
        else:
            await websocket.send_text("Message accepted")

    except WebSocketDisconnectError as e:
        # Standard close codes:
        # 1000 = Normal closure
        # 1001 = Going away
        # 1002 = Protocol error
        # 1003 = Unsupported data
        # 1007 = Invalid data
        # 1008 = Policy violation
        # 1009 = Message too large
        # 1011 = Internal server error
        print(f"Connection closed with code: {e.code}")
