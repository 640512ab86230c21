"""BlackSheep's chat with history, rewritten for many workers with channels.

examples/ws_chat_history.py keeps each room's connections and history in
process-local structures: correct with one worker only. Here a room is the
topic ``chat:<room_id>`` and its history is the channel history
(``app.channels.history``), kept by the backend (the master, or Redis), so a
client joining on any worker gets the same last messages.

Differences from the seed, all caused by the move to channels:

* the first message is ``{"type": "welcome", "room", "pid"}`` (the worker's
  pid, so a client or a test can see where it landed);
* the history is the room's timeline: chat messages and the join/leave
  notices, ending with the joiner's own ``user_joined``; everything after
  that notice is live, with no gap and no duplicate between the two;
* the sender gets its own chat message back, in the room's order (one order
  for every member; a per-connection exclusion would cost an encoding per
  connection instead of one per worker).

    app-server --workers 4 examples.channels_chat_history:app
    # ws://127.0.0.1:8000/chat/<room_id>
"""

from __future__ import annotations

import os
import time

from app_server import App, WebSocket
from app_server.channels.history import SEQ_LIMIT
from app_server.exceptions import ChannelGap, ChannelUnavailable, WebSocketDisconnectError

app = App()

REPLAY = 50  # messages a joiner gets, as in the seed
# Kept per room: twice the replay, so messages published between a join and
# its subscription do not push the replay's start out of the kept history.
app.channels.history("chat:*", size=2 * REPLAY)


def room_topic(room_id: str) -> str:
    return f"chat:{room_id}"


def replay_from(offset: int, count: int) -> int:
    """The offset after which the last ``count`` messages up to ``offset`` start.

    Offsets count up by one per message within an epoch (SPEC §9); the first
    message of an epoch has sequence 1, so the start never goes below 0.
    """
    return offset - min(count, offset % SEQ_LIMIT)


@app.ws("/chat/{room_id}")
async def chat_room(websocket: WebSocket, room_id: str) -> None:
    topic = room_topic(room_id)
    await websocket.accept()
    await websocket.send_json({"type": "welcome", "room": room_id, "pid": os.getpid()})

    # Announce user joined; its offset marks where the joiner's history ends.
    joined = await app.channels.publish(topic, {
        "type": "user_joined",
        "room": room_id,
        "timestamp": time.time(),
    })
    assert joined is not None  # chat:* keeps history
    try:
        # Chat history (up to the last 50 events, the join included), then live.
        await websocket.subscribe(topic, since=replay_from(joined, REPLAY))
    except ChannelGap:
        # More than the kept history went by in between: join live only.
        await websocket.subscribe(topic)

    try:
        while True:
            data = await websocket.receive_json()
            await app.channels.publish(topic, {
                "type": "chat_message",
                "room": room_id,
                "user": data.get("user", "Anonymous"),
                "message": data.get("message", ""),
                "timestamp": time.time(),
            })
    except WebSocketDisconnectError:
        pass
    finally:
        # The closed WebSocket has already left the topic; tell the others.
        try:
            await app.channels.publish(topic, {
                "type": "user_left",
                "room": room_id,
                "timestamp": time.time(),
            })
        except ChannelUnavailable:
            pass


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
