"""Sanic's WebSocket echo server with its test page, on app-server.

Port of the Sanic seed's "basic echo" example: only the imports and the app
construction changed. The page opens its WebSocket on the host it was loaded
from (``location.host``) instead of a hard-coded ``localhost:8000``, so it
also works on another port.

    python -m examples.ws_echo_page          # then open http://127.0.0.1:8000/
"""

from __future__ import annotations

from app_server import App, html

app = App("WebSocketApp")


@app.websocket("/ws")
async def websocket_echo(request, ws):
    """Simple echo WebSocket handler."""
    await ws.send("Welcome to WebSocket echo server!")
    async for msg in ws:
        print(f"Received: {msg}")
        await ws.send(f"Echo: {msg}")


@app.route("/")
async def index(request):
    """Serve WebSocket test page."""
    return html("""
<!DOCTYPE html>
<html>
<head><title>WebSocket Test</title></head>
<body>
    <div id="messages"></div>
    <input type="text" id="messageInput" placeholder="Type a message...">
    <button onclick="sendMessage()">Send</button>

    <script>
        const ws = new WebSocket(`ws://${location.host}/ws`);
        const messages = document.getElementById('messages');

        ws.onmessage = function(event) {
            const div = document.createElement('div');
            div.textContent = event.data;
            messages.appendChild(div);
        };

        function sendMessage() {
            const input = document.getElementById('messageInput');
            ws.send(input.value);
            input.value = '';
        }
    </script>
</body>
</html>
""")


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
