"""The equivalent Sanic app (framework routes), run with --single-process."""

from __future__ import annotations

import json as _json

from sanic import Sanic
from sanic.response import json as json_response
from sanic.response import raw, text

app = Sanic("bench_sanic")
app.config.ACCESS_LOG = False
app.config.MOTD = False


@app.get("/")
async def plaintext(request):
    return text("Hello, world!")


@app.get("/json")
async def json_handler(request):
    # Sanic's json() serialises per call (dumps=json.dumps for a fair comparison
    # with the other apps, which all use the stdlib json module).
    return json_response({"message": "Hello, world!"}, dumps=_json.dumps)


@app.post("/echo")
async def echo(request):
    return raw(request.body, content_type="application/octet-stream")
