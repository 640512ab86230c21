"""Each framework example in examples/asgi/ on a real server process, compared with Uvicorn.

For every framework (Starlette, FastAPI, Django, BlackSheep, Quart) the same
table of requests goes to the app under Uvicorn and under app-server; the
answers must agree on status, body, framing (content-length or chunked) and
every header except the ones a server sets for itself (date, server,
connection, keep-alive). Each server's answers are also checked against what
the app is meant to send, so two equally wrong servers do not pass.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from websockets.sync.client import connect

from examples.asgi.common import DATA_FILE, RESOURCE, STREAM_CHUNKS, json_document
from tests.asgi.conftest import SERVERS, ServerProcess

FRAMEWORKS = ("starlette", "fastapi", "django", "blacksheep", "quart")
# Headers each server sets on its own; everything else comes from the app and must match.
SERVER_HEADERS = frozenset({"date", "server", "connection", "keep-alive", "transfer-encoding"})
BIG_BODY = random.Random(13).randbytes(5 * 1024 * 1024 + 17)
CHUNK = 64 * 1024


def _chunks() -> Iterator[bytes]:
    for start in range(0, len(BIG_BODY), CHUNK):
        yield BIG_BODY[start : start + CHUNK]


@dataclass(frozen=True)
class Call:
    name: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""  # "", "sized" (content-length) or "chunked"

    def send(self, client: httpx.Client) -> httpx.Response:
        content: bytes | Iterator[bytes] | None = None
        if self.body == "sized":
            content = BIG_BODY
        elif self.body == "chunked":
            content = _chunks()
        return client.request(self.method, self.path, headers=self.headers, content=content)


CALLS = (
    Call("json", "GET", "/json"),
    Call("head-json", "HEAD", "/json"),
    Call("resource", "GET", "/resource"),
    Call("stream", "GET", "/stream"),
    Call("file", "GET", "/file"),
    Call("file-range", "GET", "/file", headers={"range": "bytes=0-99"}),
    Call("missing", "GET", "/missing"),
    Call("upload-sized", "POST", "/upload", body="sized"),
    Call("upload-chunked", "POST", "/upload", body="chunked"),
)


@dataclass(frozen=True)
class Answer:
    status: int
    framing: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def __str__(self) -> str:
        body = self.body if len(self.body) < 300 else self.body[:300] + b"..."
        return f"{self.status} {self.framing} {list(self.headers)} {body!r}"


def answer_of(response: httpx.Response) -> Answer:
    raw = response.headers.multi_items()
    if any(k == "transfer-encoding" and "chunked" in v.lower() for k, v in raw):
        framing = "chunked"
    elif "content-length" in response.headers:
        framing = "content-length"
    else:
        framing = "until-close"
    headers = tuple(sorted((k.lower(), v) for k, v in raw if k.lower() not in SERVER_HEADERS))
    return Answer(response.status_code, framing, headers, response.content)


def _framed_by_us(ours: Answer, theirs: Answer, head: bool) -> Answer:
    """``ours`` as Uvicorn would frame it, when the only difference is the one app-server
    makes on purpose: an app that sends its whole body in one ``http.response.body``
    without a Content-Length (Django does) gets it written with its length, where
    Uvicorn uses chunked. Both are valid framings (RFC 9112 §6); the length lets the
    client know the body is complete and is cheaper than chunking. To a HEAD app-server
    sends the Content-Length its GET would have (RFC 9110 §9.3.2), Uvicorn none."""
    framed = ours.framing == "content-length" and (
        head
        or (theirs.framing == "chunked" and ("content-length", str(len(ours.body))) in ours.headers)
    )
    if framed and not any(k == "content-length" for k, _ in theirs.headers):
        headers = tuple(h for h in ours.headers if h[0] != "content-length")
        return Answer(ours.status, "chunked", headers, ours.body)
    return ours


def compare(ours: Answer, theirs: Answer, head: bool = False) -> list[str]:
    """The differences between two answers, one line each (empty: they agree).

    ``head``: the answers are to a HEAD, which has no body whatever the framing
    headers say (RFC 9110 §9.3.2): the framing is not compared there, and a
    Content-Length app-server sends where Uvicorn sends none is accepted.
    """
    ours = _framed_by_us(ours, theirs, head)
    problems = []
    if ours.status != theirs.status:
        problems.append(f"status {ours.status} != {theirs.status}")
    if ours.framing != theirs.framing and not head:
        problems.append(f"framing {ours.framing} != {theirs.framing}")
    if ours.headers != theirs.headers:
        mine, other = set(ours.headers), set(theirs.headers)
        problems.append(
            f"headers only app-server {sorted(mine - other)}, only uvicorn {sorted(other - mine)}"
        )
    if ours.body != theirs.body:
        problems.append(f"body {ours.body[:200]!r} != {theirs.body[:200]!r}")
    return problems


@pytest.fixture(scope="module")
def served(
    start_server: Callable[[str, str], ServerProcess],
) -> Callable[[str, str], ServerProcess]:
    """``served(kind, framework)``: that framework's example under that server, started once."""
    cache: dict[tuple[str, str], ServerProcess] = {}

    def get(kind: str, framework: str) -> ServerProcess:
        key = (kind, framework)
        if key not in cache:
            cache[key] = start_server(kind, f"examples.asgi.{framework}_app:app")
        return cache[key]

    return get


def _client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30.0)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("kind", SERVERS)
def test_example_answers_what_it_should(
    served: Callable[[str, str], ServerProcess], kind: str, framework: str
) -> None:
    server = served(kind, framework)
    with _client(server) as client:
        reply = client.get("/json")
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("application/json")
        assert reply.json() == json_document(framework)

        assert client.get("/resource").json() == {"resource": RESOURCE}

        reply = client.get("/stream")
        assert reply.status_code == 200
        assert reply.content == b"".join(STREAM_CHUNKS)
        assert reply.headers["content-type"].startswith("text/plain")

        reply = client.get("/file")
        assert reply.status_code == 200
        assert reply.content == DATA_FILE.read_bytes()

        expected = {"size": len(BIG_BODY), "sha256": hashlib.sha256(BIG_BODY).hexdigest()}
        for body in ("sized", "chunked"):
            reply = Call("upload", "POST", "/upload", body=body).send(client)
            assert reply.status_code == 200, reply.text[:500]
            assert json.loads(reply.content) == expected


@pytest.mark.parametrize("call", CALLS, ids=[c.name for c in CALLS])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_same_answer_as_uvicorn(
    served: Callable[[str, str], ServerProcess], framework: str, call: Call
) -> None:
    with (
        _client(served("app-server", framework)) as ours,
        _client(served("uvicorn", framework)) as theirs,
    ):
        mine, other = answer_of(call.send(ours)), answer_of(call.send(theirs))
    problems = compare(mine, other, head=call.method == "HEAD")
    assert not problems, (
        f"{call.method} {call.path} {call.headers} ({framework}):\n  "
        + "\n  ".join(problems)
        + f"\napp-server: {mine}\nuvicorn:    {other}"
    )


def _echo_session(server: ServerProcess) -> list[object]:
    """Text, binary, empty and a 200 KiB message echoed back, then a client close."""
    seen: list[object] = []
    with connect(server.ws_url + "/ws", max_size=None, open_timeout=10) as ws:
        for message in ("hello", b"\x00\x01\xff", "", "x" * 200_000, b"y" * 200_000):
            ws.send(message)
            seen.append(ws.recv(timeout=10))
    return seen


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("kind", SERVERS)
def test_websocket_echo(
    served: Callable[[str, str], ServerProcess], kind: str, framework: str
) -> None:
    """The same session gives the same echoes under both servers (and what was sent)."""
    expected = ["hello", b"\x00\x01\xff", "", "x" * 200_000, b"y" * 200_000]
    assert _echo_session(served(kind, framework)) == expected
