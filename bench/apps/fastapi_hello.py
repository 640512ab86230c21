"""A FastAPI app with the bench's three routes, for app-server, uvicorn and granian alike.

  GET  /      -> 13-byte "Hello, world!" text/plain
  GET  /json  -> {"message":"Hello, world!"} serialised per request
  POST /echo  -> the request body echoed back (application/octet-stream)

Written as a FastAPI user would (response classes, no raw ASGI), so the
figures measure the server under a typical framework's per-request cost.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/", response_class=PlainTextResponse)
async def plaintext() -> PlainTextResponse:
    return PlainTextResponse("Hello, world!")


@app.get("/json")
async def json_route() -> JSONResponse:
    return JSONResponse({"message": "Hello, world!"})


@app.post("/echo")
async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")
