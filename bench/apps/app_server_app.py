"""app-server framework routes (not a raw protocol) for the benchmark."""

from __future__ import annotations

from app_server import App, json, raw, text

app = App("bench")


@app.get("/")
async def plaintext(request):
    return text("Hello, world!")


@app.get("/json")
async def json_handler(request):
    return json({"message": "Hello, world!"})


@app.post("/echo")
async def echo(request):
    return raw(request.body, content_type="application/octet-stream")
