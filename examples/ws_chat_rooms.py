"""Sanic's multi-room chat with a room-list endpoint, on app-server.

Port of the Sanic seed's "chat room" example: only the imports and the app
construction changed, and ``broadcast_to_room`` delegates to
``app.broadcast`` (see there).

    python -m examples.ws_chat_rooms
    # ws://127.0.0.1:8000/ws/chat/<room_id>  and  GET /api/rooms
"""

from __future__ import annotations

import json as json_lib

from app_server import App, json

app = App("ChatApp")

# Store active connections
connected_clients = set()
chat_rooms = {}


@app.websocket("/ws/chat/<room_id>")
async def chat_room(request, ws, room_id):
    """Multi-room chat WebSocket handler."""
    # Initialize room if it doesn't exist
    if room_id not in chat_rooms:
        chat_rooms[room_id] = set()

    # Add client to room
    chat_rooms[room_id].add(ws)
    connected_clients.add(ws)

    try:
        # Send welcome message
        await ws.send(json_lib.dumps({
            "type": "system",
            "message": f"Welcome to chat room {room_id}",
            "room": room_id,
        }))

        # Broadcast user joined
        await broadcast_to_room(room_id, {
            "type": "user_joined",
            "message": "A user joined the room",
            "room": room_id,
        }, exclude=ws)

        # Handle messages
        async for message in ws:
            try:
                data = json_lib.loads(message)
                if data.get("type") == "chat":
                    # Broadcast chat message to room
                    await broadcast_to_room(room_id, {
                        "type": "chat",
                        "message": data.get("message", ""),
                        "user": data.get("user", "Anonymous"),
                        "room": room_id,
                    })
            except json_lib.JSONDecodeError:
                await ws.send(json_lib.dumps({
                    "type": "error",
                    "message": "Invalid JSON format",
                }))

    except Exception as e:
        print(f"WebSocket error: {e}")
    finally:
        # Clean up when client disconnects
        if ws in connected_clients:
            connected_clients.remove(ws)

        if room_id in chat_rooms and ws in chat_rooms[room_id]:
            chat_rooms[room_id].remove(ws)

            # Broadcast user left
            await broadcast_to_room(room_id, {
                "type": "user_left",
                "message": "A user left the room",
                "room": room_id,
            })

            # Remove empty rooms
            if not chat_rooms[room_id]:
                del chat_rooms[room_id]


async def broadcast_to_room(room_id, message, exclude=None):
    """Broadcast message to all clients in a room."""
    if room_id not in chat_rooms:
        return

    # app.broadcast replaces the seed's per-socket loop: it serialises the
    # dict to JSON once, sends it to every socket and skips the ones that are
    # already closed (they leave chat_rooms in the handler's ``finally``).
    await app.broadcast([client for client in chat_rooms[room_id] if client != exclude], message)


@app.route("/api/rooms")
async def get_active_rooms(request):
    """Get list of active chat rooms."""
    return json({
        "rooms": list(chat_rooms.keys()),
        "total_clients": len(connected_clients),
    })


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
