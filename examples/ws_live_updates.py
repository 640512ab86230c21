"""BlackSheep's live updates pushed from an HTTP endpoint, on app-server.

Port of the BlackSheep seed's "live updates" example: only the imports and
the app construction changed, ``broadcast_update`` delegates to
``app.broadcast`` (see there), and the seed's undefined storage helpers
(``get_topic_data``, ``save_data``) are a dict in memory.

    python -m examples.ws_live_updates
    # ws://127.0.0.1:8000/updates/<topic>, then:
    curl -X POST -H 'content-type: application/json' -d '{"price": 42}' \\
        http://127.0.0.1:8000/api/data/<topic>
"""

from __future__ import annotations

import time

from app_server import App, FromJSON, WebSocket, json
from app_server.exceptions import WebSocketDisconnectError

app = App()

# The data of each topic (stands in for the seed's database).
topic_store: dict[str, dict] = {}


async def get_topic_data(topic: str) -> dict:
    return topic_store.get(topic, {})


async def save_data(topic: str, data: dict) -> None:
    topic_store[topic] = data


# Global subscribers registry
update_subscribers: dict[str, list[WebSocket]] = {}


async def add_subscriber(topic: str, websocket: WebSocket):
    if topic not in update_subscribers:
        update_subscribers[topic] = []
    update_subscribers[topic].append(websocket)


async def remove_subscriber(topic: str, websocket: WebSocket):
    if topic in update_subscribers:
        try:
            update_subscribers[topic].remove(websocket)
        except ValueError:
            pass


async def broadcast_update(topic: str, data: dict):
    """Broadcast update to all subscribers of a topic"""
    if topic not in update_subscribers:
        return

    # app.broadcast replaces the seed's per-socket loop: one JSON encoding for
    # every subscriber, and closed connections are skipped (they leave
    # update_subscribers in the handler's ``finally``).
    await app.broadcast(list(update_subscribers[topic]), {
        "topic": topic,
        "data": data,
        "timestamp": time.time(),
    })


@app.ws("/updates/{topic}")
async def live_updates(websocket: WebSocket, topic: str):
    await websocket.accept()
    await add_subscriber(topic, websocket)

    # Send initial data
    initial_data = await get_topic_data(topic)
    await websocket.send_json({
        "type": "initial_data",
        "topic": topic,
        "data": initial_data,
    })

    try:
        # Keep connection alive and handle client messages
        while True:
            message = await websocket.receive_json()

            if message.get("type") == "subscribe_additional":
                additional_topic = message.get("topic")
                if additional_topic:
                    await add_subscriber(additional_topic, websocket)

            elif message.get("type") == "unsubscribe":
                unsub_topic = message.get("topic")
                if unsub_topic:
                    await remove_subscriber(unsub_topic, websocket)

    except WebSocketDisconnectError:
        pass
    finally:
        # Remove from all subscriptions
        for subscribers in update_subscribers.values():
            if websocket in subscribers:
                subscribers.remove(websocket)


# Trigger updates from other parts of application
async def notify_data_change(topic: str, data: dict):
    """Call this function when data changes to notify subscribers"""
    await broadcast_update(topic, data)


# Example: Update triggered by HTTP endpoint
@app.post("/api/data/{topic}")
async def update_data(topic: str, data: FromJSON[dict]):
    # Update data in database
    await save_data(topic, data.value)

    # Notify WebSocket subscribers
    await notify_data_change(topic, data.value)

    return json({"updated": True})


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
