"""The BlackSheep seed's WebSocket API snippets, on app-server.

Each snippet of the BlackSheep seed's API sections on its own path, with only
the imports and the app construction changed; the helpers the seed leaves
undefined (``process_message``, ``get_user_notifications``, the custom JSON
functions, ``heavy_processing``) are small functions here.

    python -m examples.ws_blacksheep_api     # ws://127.0.0.1:8000/ws and the rest
"""

from __future__ import annotations

import asyncio
import json
import weakref
from datetime import datetime
from decimal import Decimal

from app_server import App, WebSocket, WebSocketState
from app_server.exceptions import (
    InvalidWebSocketStateError,
    WebSocketDisconnectError,
    WebSocketError,
)

app = App()


def custom_json_dumps(obj) -> str:
    return json.dumps(obj, default=lambda value: value.isoformat())


def custom_json_loads(text):
    return json.loads(text, parse_float=Decimal)


async def process_message(message: str) -> str:
    if message == "crash":
        raise RuntimeError("processing failed")
    if not message.strip():
        raise ValueError("empty message")
    return message.upper()


async def get_user_notifications(user_id: int) -> list[dict]:
    return [{"user_id": user_id, "id": n, "text": f"notification {n}"} for n in (1, 2)]


async def heavy_processing(message: str) -> int:
    await asyncio.sleep(0)
    if message == "fail":
        raise ValueError("cannot process 'fail'")
    return len(message)


# Simple WebSocket endpoint
@app.ws("/ws")
async def websocket_handler(websocket: WebSocket):
    await websocket.accept()

    try:
        while True:
            message = await websocket.receive_text()
            await websocket.send_text(f"Echo: {message}")
    except WebSocketDisconnectError:
        print("Client disconnected")


@app.ws("/chat")
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


@app.ws("/messages")
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


@app.ws("/updates")
async def update_handler(websocket: WebSocket):
    await websocket.accept()

    try:
        # Send text messages
        await websocket.send_text("Welcome to updates!")

        # Send JSON messages
        data = {"type": "notification", "message": "Server started"}
        await websocket.send_json(data)

        # Send binary data
        binary_data = b"Binary data here"
        await websocket.send_bytes(binary_data)

        # Custom JSON serializer
        complex_data = {"timestamp": datetime.now(), "users": [1, 2, 3]}
        await websocket.send_json(complex_data, dumps=custom_json_dumps)

        # Keep connection alive
        while True:
            await websocket.receive_text()
    except WebSocketDisconnectError:
        pass


@app.ws("/receiver")
async def receive_handler(websocket: WebSocket):
    await websocket.accept()

    try:
        while True:
            # Receive text
            text_message = await websocket.receive_text()
            print(f"Received text: {text_message}")

            # Receive JSON with automatic parsing
            json_data = await websocket.receive_json()
            print(f"Received JSON: {json_data}")

            # Receive binary data
            binary_data = await websocket.receive_bytes()
            print(f"Received {len(binary_data)} bytes")

            # Custom JSON deserializer
            custom_data = await websocket.receive_json(loads=custom_json_loads)
            print(f"Received custom JSON: {custom_data!r}")
    except WebSocketDisconnectError:
        pass


# Typed route parameters
@app.ws("/user/{user_id:int}/notifications")
async def user_notifications(websocket: WebSocket, user_id: int):
    await websocket.accept()

    # user_id is automatically converted to int
    print(f"Notifications for user {user_id}")

    try:
        # Send user-specific notifications
        notifications = await get_user_notifications(user_id)
        for notification in notifications:
            await websocket.send_json(notification)

        # Listen for real-time updates
        while True:
            await websocket.receive_text()  # Keep alive
    except WebSocketDisconnectError:
        pass


@app.ws("/stateful")
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


@app.ws("/validated")
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
                    expected_state=WebSocketState.CONNECTED,
                )

            await websocket.send_text(f"Processed: {message}")

    except InvalidWebSocketStateError as e:
        print(f"Invalid state: {e.current_state}, expected: {e.expected_state}")
    except WebSocketDisconnectError:
        pass


@app.ws("/error-handling")
async def error_handler(websocket: WebSocket):
    try:
        await websocket.accept()

        while True:
            try:
                message = await websocket.receive_text()

                # Process message (might raise application errors)
                result = await process_message(message)
                await websocket.send_json({"result": result})

            except ValueError as e:
                # Application error - send error message but keep connection
                await websocket.send_json({
                    "error": "validation_error",
                    "message": str(e),
                })
            except Exception:
                # Unexpected error - send error and close connection
                await websocket.send_json({
                    "error": "internal_error",
                    "message": "An unexpected error occurred",
                })
                await websocket.close(code=1011)  # Internal server error
                break

    except WebSocketDisconnectError as e:
        print(f"Client disconnected: code={e.code}")
    except InvalidWebSocketStateError as e:
        print(f"Invalid WebSocket state: {e}")
    except WebSocketError as e:
        print(f"WebSocket error: {e}")
    except Exception as e:
        print(f"Unexpected error: {e}")

    # Ensure connection is closed
    if websocket.state == WebSocketState.CONNECTED:
        await websocket.close(code=1011)


@app.ws("/close-codes")
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
        print(f"Connection closed with code: {e.code}")


# Use weak references to avoid memory leaks
active_connections: weakref.WeakSet[WebSocket] = weakref.WeakSet()


@app.ws("/optimized")
async def optimized_handler(websocket: WebSocket):
    await websocket.accept()
    active_connections.add(websocket)

    try:
        # Efficient message processing
        while True:
            message = await websocket.receive_text()
            # Process in background to avoid blocking
            asyncio.create_task(process_message_async(message, websocket))
    except WebSocketDisconnectError:
        pass
    # WeakSet automatically removes disconnected websockets


async def process_message_async(message: str, websocket: WebSocket):
    """Process message without blocking the receive loop"""
    try:
        result = await heavy_processing(message)
        if websocket.state == WebSocketState.CONNECTED:
            await websocket.send_json({"result": result})
    except Exception as e:
        if websocket.state == WebSocketState.CONNECTED:
            await websocket.send_json({"error": str(e)})


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
