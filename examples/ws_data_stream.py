"""Sanic's real-time data stream, on app-server.

Port of the Sanic seed's "real-time data streaming" example. Changes: the
imports and the app construction; ``datetime.now(UTC)`` for the deprecated
``datetime.utcnow()``; and the pause between readings is the module constant
``STREAM_INTERVAL`` (one second, as in the seed) so tests can shorten it.

    python -m examples.ws_data_stream        # ws://127.0.0.1:8000/ws/data-stream
"""

from __future__ import annotations

import asyncio
import json as json_lib
import random
from datetime import UTC, datetime

from app_server import App

app = App("DataStreamApp")

STREAM_INTERVAL = 1.0  # seconds between two readings


@app.websocket("/ws/data-stream")
async def data_stream(request, ws):
    """Stream real-time data to WebSocket clients."""
    # Send initial connection confirmation
    await ws.send(json_lib.dumps({
        "type": "connected",
        "message": "Data stream connected",
        "timestamp": datetime.now(UTC).isoformat(),
    }))

    # Create background task for data streaming
    stream_task = asyncio.create_task(stream_data(ws))
    receive_task = asyncio.create_task(handle_client_messages(ws))

    try:
        # Wait for either task to complete
        done, pending = await asyncio.wait(
            [stream_task, receive_task],
            return_when=asyncio.FIRST_COMPLETED,
        )

        # Cancel pending tasks
        for task in pending:
            task.cancel()

    except Exception as e:
        print(f"WebSocket streaming error: {e}")
    finally:
        if not ws.closed:
            await ws.close()


async def stream_data(ws):
    """Stream data to WebSocket client."""
    while not ws.closed:
        try:
            # Generate sample data
            data = {
                "type": "data",
                "timestamp": datetime.now(UTC).isoformat(),
                "value": random.randint(1, 100),
                "sensor_id": "sensor_001",
                "temperature": round(random.uniform(20.0, 30.0), 2),
                "humidity": round(random.uniform(40.0, 80.0), 2),
            }

            await ws.send(json_lib.dumps(data))
            await asyncio.sleep(STREAM_INTERVAL)  # Send data every second

        except Exception as e:
            print(f"Data streaming error: {e}")
            break


async def handle_client_messages(ws):
    """Handle messages from WebSocket client."""
    async for message in ws:
        try:
            data = json_lib.loads(message)

            if data.get("type") == "ping":
                await ws.send(json_lib.dumps({
                    "type": "pong",
                    "timestamp": datetime.now(UTC).isoformat(),
                }))
            elif data.get("type") == "subscribe":
                # Handle subscription requests
                sensor_id = data.get("sensor_id")
                await ws.send(json_lib.dumps({
                    "type": "subscribed",
                    "sensor_id": sensor_id,
                    "message": f"Subscribed to {sensor_id}",
                }))

        except json_lib.JSONDecodeError:
            await ws.send(json_lib.dumps({
                "type": "error",
                "message": "Invalid message format",
            }))


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
