"""BlackSheep's chat application with message history, on app-server.

Port of the BlackSheep seed's "chat application" example: only the imports
and the app construction changed, and ``broadcast_to_room`` delegates to
``app.broadcast`` (see there). A joining client gets the room's last 50
messages; the others get ``user_joined`` / ``user_left`` notices and every
chat message except their own.

    python -m examples.ws_chat_history       # ws://127.0.0.1:8000/chat/<room_id>
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from app_server import App, WebSocket
from app_server.exceptions import WebSocketDisconnectError

app = App()


@dataclass
class ChatRoom:
    room_id: str
    connections: set[WebSocket]
    message_history: list


# Global room registry
chat_rooms: dict[str, ChatRoom] = {}


async def get_or_create_room(room_id: str) -> ChatRoom:
    if room_id not in chat_rooms:
        chat_rooms[room_id] = ChatRoom(room_id, set(), [])
    return chat_rooms[room_id]


async def broadcast_to_room(room: ChatRoom, message: dict, sender: WebSocket = None):
    """Broadcast message to all connections in room except sender"""
    # app.broadcast replaces the seed's per-socket loop: it serialises the
    # dict to JSON once and skips connections that are already closed (they
    # leave room.connections in the handler's ``finally``).
    await app.broadcast(
        [connection for connection in room.connections if connection != sender], message
    )


@app.ws("/chat/{room_id}")
async def chat_room(websocket: WebSocket, room_id: str):
    room = await get_or_create_room(room_id)
    room.connections.add(websocket)

    await websocket.accept()

    # Send chat history
    for message in room.message_history[-50:]:  # Last 50 messages
        await websocket.send_json(message)

    # Announce user joined
    join_message = {
        "type": "user_joined",
        "room": room_id,
        "timestamp": time.time(),
    }
    await broadcast_to_room(room, join_message, websocket)

    try:
        while True:
            data = await websocket.receive_json()

            # Create message
            message = {
                "type": "chat_message",
                "room": room_id,
                "user": data.get("user", "Anonymous"),
                "message": data.get("message", ""),
                "timestamp": time.time(),
            }

            # Store in history
            room.message_history.append(message)
            if len(room.message_history) > 1000:
                room.message_history = room.message_history[-1000:]

            # Broadcast to room
            await broadcast_to_room(room, message, websocket)

    except WebSocketDisconnectError:
        pass
    finally:
        # Remove from room
        room.connections.discard(websocket)

        # Announce user left
        leave_message = {
            "type": "user_left",
            "room": room_id,
            "timestamp": time.time(),
        }
        await broadcast_to_room(room, leave_message)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
