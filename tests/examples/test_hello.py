"""The bundled example, through the in-process client and a real socket."""

from __future__ import annotations

import httpx

from app_server.testing import TestClient
from examples.hello import app
from tests.conftest import serve_app


def test_hello_routes_in_process() -> None:
    with TestClient(app) as client:
        assert client.get("/").text == "Hello, world!"
        assert client.get("/hello/world").json() == {"hello": "world"}
        assert client.get("/add/2/40").json() == {"a": 2, "b": 40, "sum": 42}
        assert client.get("/add/2/x").status == 404  # does not convert: no match
        assert client.get("/search", params={"q": "cats"}).json() == {"q": "cats", "limit": 10}
        assert client.get("/search").status == 400  # q is required


def test_hello_notes_over_a_real_socket() -> None:
    with serve_app(app) as server, httpx.Client(base_url=server.url) as client:
        created = client.post("/v1/notes/", json={"text": "buy milk"})
        assert created.status_code == 201
        location = created.headers["location"]
        assert location.startswith("/v1/notes/")
        fetched = client.get(location)
        assert fetched.json()["text"] == "buy milk"
        assert client.post("/v1/notes/", json=[1, 2]).status_code == 400
        assert client.get("/v1/notes/999999").status_code == 404
