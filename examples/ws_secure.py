"""Sanic's WebSocket with authentication and rate limiting, on app-server.

Port of the Sanic seed's "authentication and rate limiting" example. Changes:
the imports, the app construction and ``datetime.now(UTC)`` for the
deprecated ``datetime.utcnow()``. A missing or wrong token closes the
connection with 1008 (Policy Violation) and a reason.

    python -m examples.ws_secure     # ws://127.0.0.1:8000/ws/secure?token=valid_token
"""

from __future__ import annotations

import json as json_lib
import time
from collections import defaultdict
from datetime import UTC, datetime

from app_server import App

app = App("SecureWebSocketApp")

# Rate limiting storage
client_requests = defaultdict(list)
RATE_LIMIT = 10  # 10 messages per minute
RATE_WINDOW = 60  # 1 minute window


@app.websocket("/ws/secure")
async def secure_websocket(request, ws):
    """WebSocket with authentication and rate limiting."""
    # Authenticate connection
    token = request.args.get("token") or request.headers.get("Authorization")
    if not token:
        await ws.close(code=1008, reason="Authentication token required")
        return

    try:
        user = await validate_token(token)
        client_id = user["id"]
    except Exception:
        await ws.close(code=1008, reason="Invalid authentication token")
        return

    await ws.send(json_lib.dumps({
        "type": "authenticated",
        "user": user["username"],
        "message": "Authentication successful",
    }))

    try:
        async for message in ws:
            # Rate limiting check
            if not check_rate_limit(client_id):
                await ws.send(json_lib.dumps({
                    "type": "error",
                    "message": "Rate limit exceeded. Please slow down.",
                }))
                continue

            # Process message
            try:
                data = json_lib.loads(message)

                # Echo message back with user info
                response = {
                    "type": "message",
                    "user": user["username"],
                    "message": data.get("message", ""),
                    "timestamp": datetime.now(UTC).isoformat(),
                }

                await ws.send(json_lib.dumps(response))

            except json_lib.JSONDecodeError:
                await ws.send(json_lib.dumps({
                    "type": "error",
                    "message": "Invalid JSON format",
                }))

    except Exception as e:
        print(f"Secure WebSocket error: {e}")
    finally:
        # Clean up rate limiting data
        if client_id in client_requests:
            del client_requests[client_id]


def check_rate_limit(client_id):
    """Check if client is within rate limits."""
    now = time.time()

    # Clean old requests
    client_requests[client_id] = [
        req_time for req_time in client_requests[client_id]
        if now - req_time < RATE_WINDOW
    ]

    # Check rate limit
    if len(client_requests[client_id]) >= RATE_LIMIT:
        return False

    # Record this request
    client_requests[client_id].append(now)
    return True


async def validate_token(token):
    """Validate authentication token."""
    # Implement your token validation logic
    if token == "valid_token":
        return {"id": "user123", "username": "testuser"}
    raise ValueError("Invalid token")


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
