"""BlackSheep's authenticated WebSockets, on app-server.

Port of the BlackSheep seed's two authentication examples, with only the
imports and the app construction changed:

* ``/secure-chat`` is guarded by ``@auth()``: the identity comes from
  ``app.use_authentication`` (a Bearer token here) and a handshake without
  one is answered with HTTP 401 before the handler runs;
* ``/token-auth`` reads ``?token=`` from the handshake's scope and closes
  with 1008 (Policy Violation) when it is missing or wrong.

The seed leaves the token check and the message processing undefined; here
tokens are a dict and processed messages are kept in memory.

    python -m examples.ws_token_auth
    # ws://127.0.0.1:8000/token-auth?token=alice-token
    # ws://127.0.0.1:8000/secure-chat  with  Authorization: Bearer alice-token
"""

from __future__ import annotations

import time

from app_server import App, Identity, Request, WebSocket, auth
from app_server.exceptions import WebSocketDisconnectError

app = App()

# token -> user (stands in for a real token service)
TOKENS = {
    "alice-token": {"id": "alice", "name": "Alice"},
    "bob-token": {"id": "bob", "name": "Bob"},
}

processed_messages: list[dict] = []  # what process_user_message received
authenticated_messages: list[tuple[dict, dict]] = []  # (message, user) pairs


async def authenticate(request: Request) -> Identity | None:
    """Turn ``Authorization: Bearer <token>`` into an identity (None: anonymous)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    user = TOKENS.get(token) if scheme.lower() == "bearer" else None
    return Identity(user, "Bearer") if user else None


app.use_authentication(authenticate)


async def validate_token(token: str) -> dict:
    user = TOKENS.get(token)
    if user is None:
        raise ValueError("invalid token")
    return user


async def process_user_message(message: dict) -> None:
    processed_messages.append(message)


async def process_authenticated_message(message: dict, user_data: dict) -> None:
    authenticated_messages.append((message, user_data))


# Authenticated WebSocket endpoint
@app.ws("/secure-chat")
@auth()  # Require authentication
async def secure_chat(websocket: WebSocket, request: Request):
    # Authentication happens before WebSocket upgrade
    identity: Identity = request.identity
    user_id = identity.id

    await websocket.accept()

    # Send welcome message with user info
    await websocket.send_json({
        "type": "welcome",
        "user_id": user_id,
        "username": identity.claims.get("name", "Unknown"),
    })

    try:
        while True:
            message = await websocket.receive_json()

            # Add user context to messages
            message["user_id"] = user_id
            message["timestamp"] = time.time()

            # Process authenticated message
            await process_user_message(message)

    except WebSocketDisconnectError:
        print(f"User {user_id} disconnected")


@app.ws("/token-auth")
async def token_auth_websocket(websocket: WebSocket):
    # Get token from query parameters or headers during handshake
    query_params = websocket.scope.get("query_string", b"").decode()
    token = None

    # Parse token from query string
    if "token=" in query_params:
        for param in query_params.split("&"):
            if param.startswith("token="):
                token = param.split("=", 1)[1]
                break

    if not token:
        # Reject connection
        await websocket.close(code=1008)  # Policy violation
        return

    # Validate token
    try:
        user_data = await validate_token(token)
    except Exception:
        await websocket.close(code=1008)
        return

    await websocket.accept()

    # Continue with authenticated connection
    await websocket.send_json({
        "type": "authenticated",
        "user": user_data,
    })

    try:
        while True:
            message = await websocket.receive_json()
            # Process message with user context
            await process_authenticated_message(message, user_data)
    except WebSocketDisconnectError:
        pass


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
