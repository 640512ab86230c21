"""An ASGI 3 app under a real master (SPEC §10): lifespan gates readiness, a failed
startup is a boot failure, rolling reload fails no request, ASGI WebSockets get
1012 on reload and 1001 on shutdown, and metrics carry the app's route.

The app is a plain ASGI callable written here (no framework). It answers
``"<version> <pid>"`` like the other system apps, with the version its
lifespan startup put in ``scope["state"]``: a request served before startup
would answer ``none``.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.system.harness import Master, clean_env, poll
from tests.system.load import Load
from tests.system.test_metrics import requests_total, scrape

APP = '''\
import asyncio
import os
from pathlib import Path

HERE = Path(__file__).parent


class Route:
    def __init__(self, path):
        self.path = path


ITEM = Route("/items/{id}")
ROOM = Route("/rooms/{id}")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if (HERE / "fail.txt").exists():
                    await send({"type": "lifespan.startup.failed",
                                "message": (HERE / "fail.txt").read_text().strip()})
                    return
                await asyncio.sleep(0.3)  # a slow resource: ready waits for it
                scope["state"]["version"] = (HERE / "version.txt").read_text().strip()
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        if scope["path"].startswith("/rooms/"):
            scope["route"] = ROOM
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send",
                    "text": f"{scope['state'].get('version')} {os.getpid()}"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text", "")})
    while (await receive()).get("more_body"):
        pass
    if scope["path"].startswith("/items/"):
        scope["route"] = ITEM
    body = f"{scope['state'].get('version')} {os.getpid()}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
'''

BASE_ARGS = ["app:app", "--graceful-timeout", "5", "--timeout", "10", "--no-access-log"]


def start(master, tmp_path: Path, version: str = "v0", workers: int = 2) -> Master:
    (tmp_path / "version.txt").write_text(version + "\n")
    m: Master = master([*BASE_ARGS, "--workers", str(workers)], files={"app.py": APP},
                       env=clean_env(PYTHONDONTWRITEBYTECODE="1"))
    m.wait_log(f"all {workers} workers ready", timeout=30)
    m.wait_workers(lambda pids: len(pids) == workers, timeout=10)
    return m


def test_rolling_reload_waits_for_lifespan_and_fails_no_request(master, tmp_path):
    m = start(master, tmp_path, "v0")
    with Load(m.port, "keepalive", connections=3) as load:
        load.wait_responses(time.monotonic(), 100)
        for n in (1, 2):
            old = set(m.workers())
            (tmp_path / "version.txt").write_text(f"v{n}\n")
            m.signal(signal.SIGHUP)
            m.wait_log("reload complete", count=n, timeout=30)
            m.wait_workers(lambda p, old=old: len(p) == 2 and not old & set(p), timeout=15)
            load.wait_responses(time.monotonic(), 100)
        load.wait_responses(time.monotonic(), 50)
    print(f"\nASGI, 2 reloads: {load.summary()}")
    assert load.failed == 0, load.summary()
    assert "none" not in {r.version for r in load.responses}  # never before startup
    assert "reload aborted" not in m.log()


def test_startup_failed_is_exit_3_at_first_start(master, tmp_path):
    (tmp_path / "version.txt").write_text("v0\n")
    (tmp_path / "fail.txt").write_text("the database is unreachable\n")
    m: Master = master([*BASE_ARGS, "--workers", "1"], files={"app.py": APP})
    assert m.wait_exit(60) == 3
    assert "the database is unreachable" in m.log()


def test_startup_failed_aborts_a_reload_and_old_workers_keep_serving(master, tmp_path):
    m = start(master, tmp_path, "v1")
    old = set(m.workers())
    (tmp_path / "version.txt").write_text("v2\n")
    (tmp_path / "fail.txt").write_text("no database in this release\n")
    m.signal(signal.SIGHUP)
    m.wait_log("reload aborted", timeout=30)
    assert "no database in this release" in m.log()
    assert set(m.workers()) == old
    assert httpx.get(m.url + "/").text.startswith("v1 ")


def test_asgi_websockets_get_1012_on_reload_and_1001_on_shutdown(master, tmp_path):
    m = start(master, tmp_path, "v0", workers=1)
    with connect(f"ws://127.0.0.1:{m.port}/ws") as ws:
        assert ws.recv().startswith("v0 ")
        m.signal(signal.SIGHUP)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    m.wait_log("reload complete", timeout=30)
    with connect(f"ws://127.0.0.1:{m.port}/ws") as ws:
        ws.recv()
        m.signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert m.wait_exit(60) == 0


def test_metrics_label_requests_by_the_route_the_app_reports(master, tmp_path):
    m = start(master, tmp_path, "v0", workers=1)
    for path in ("/items/1", "/items/2", "/other", "/else"):
        assert httpx.get(m.url + path).status_code == 200
    for path in ("/ws", "/rooms/7"):
        with connect(f"ws://127.0.0.1:{m.port}{path}") as ws:
            ws.recv()
            ws.send("hi")
            assert ws.recv() == "hi"

    def counted() -> dict[tuple[str, str, str], float] | None:
        totals = requests_total(scrape(m))
        return totals if totals.get(("GET", "<asgi>", "200"), 0) >= 2 else None

    totals = poll(counted, 30, "requests in /metrics")
    assert totals[("GET", "/items/{id}", "200")] == 2
    assert totals[("GET", "<asgi>", "200")] == 2
    s = poll(lambda: len((s := scrape(m)).series("app_server_websocket_connections_total")) == 2
             and s, 30, "the WebSockets in /metrics")
    assert s.series("app_server_websocket_connections_total") == {
        (("route", "<asgi>"),): 1, (("route", "/rooms/{id}"),): 1,
    }
