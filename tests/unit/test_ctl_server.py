"""The control socket's pure parts: framing, where the socket goes, reload --wait's bookkeeping.

The socket itself, the peer check and the commands are tested against a
real master in ``tests/system/test_ctl.py``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from app_server import control
from app_server.control import Kind
from app_server.ctl import render, socket_path
from app_server.master.actions import ReloadEnded, Started, WorkerReady
from app_server.master.ctl_server import (
    MAX_FRAME,
    Conn,
    FrameError,
    FrameReader,
    ReloadWaits,
    default_path,
    encode_frame,
)
from app_server.master.model import Phase
from app_server.master.operations import Reload
from tests.unit.master_records import exited, make_slots, promote, view, worker

# -- framing ------------------------------------------------------------------------------


def test_a_frame_split_anywhere_is_read_whole() -> None:
    data = encode_frame({"command": "status"}) + encode_frame({"command": "add"})
    reader = FrameReader(MAX_FRAME)
    got = []
    for byte in data:
        reader.feed(bytes([byte]))
        while (obj := reader.next()) is not None:
            got.append(obj)
    assert got == [{"command": "status"}, {"command": "add"}]


def test_an_oversized_frame_is_refused_from_its_length_alone() -> None:
    reader = FrameReader(MAX_FRAME)
    reader.feed(struct.pack("!I", MAX_FRAME + 1))  # nothing of the body has come yet
    with pytest.raises(FrameError, match="at most"):
        reader.next()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"status"', "JSON object"),
    ],
)
def test_a_frame_that_is_not_a_json_object_is_an_error(body: bytes, error: str) -> None:
    reader = FrameReader(MAX_FRAME)
    reader.feed(struct.pack("!I", len(body)) + body)
    with pytest.raises(FrameError, match=error):
        reader.next()


# -- what status is made of ----------------------------------------------------------------------


def test_a_heartbeat_carries_the_open_connections() -> None:
    message = control.decode(control.encode_heartbeat(2**40 + 7, 12, 3))
    assert message.kind is Kind.HEARTBEAT
    assert control.heartbeat_of(message) == (2**40 + 7, 12, 3)
    # A 16-byte one (a worker of the previous release during a reload) still decodes.
    assert control.heartbeat_of(control.decode(control.encode(Kind.HEARTBEAT, 0, 9))) == (9, 0, 0)
    with pytest.raises(control.ControlError):
        control.decode(control.encode_heartbeat(1, 2, 3) + b"x")


# -- where the socket is -----------------------------------------------------------------------


def test_default_path_prefers_systemds_runtime_directory() -> None:
    assert (
        default_path({"RUNTIME_DIRECTORY": "/run/app-server"}, "/var/x.pid")
        == "/run/app-server/app-server.sock"
    )
    assert default_path({"RUNTIME_DIRECTORY": "/run/a:/run/b"}, None) == "/run/a/app-server.sock"
    assert default_path({}, "/run/x.pid") == "/run/x.ctl"
    assert default_path({}, "/run/x") == "/run/x.ctl"
    assert default_path({}, None) is None


def test_the_client_finds_the_socket_where_the_master_put_it() -> None:
    env = {"RUNTIME_DIRECTORY": "/run/app-server"}
    assert socket_path(None, None, env) == "/run/app-server/app-server.sock"
    assert socket_path("/x.sock", None, env) == "/x.sock"
    assert socket_path(None, None, {"APP_SERVER_CONTROL_SOCKET": "/y.sock", **env}) == "/y.sock"
    assert socket_path(None, None, {"APP_SERVER_PID": "/run/z.pid"}) == "/run/z.ctl"
    assert socket_path(None, "/run/w.pid", {}) == "/run/w.ctl"
    assert socket_path(None, None, {}) is None


def test_the_client_reads_the_masters_config_file(tmp_path: Path) -> None:
    config = tmp_path / "app-server.toml"
    config.write_text('pid = "/run/p.pid"\nworkers = 4\n')
    assert socket_path(None, None, {}, str(config)) == "/run/p.ctl"
    assert socket_path(None, None, {"APP_SERVER_CONFIG": str(config)}) == "/run/p.ctl"
    assert socket_path(None, "/run/q.pid", {}, str(config)) == "/run/q.ctl"  # flag first
    # Under systemd, RUNTIME_DIRECTORY comes before the pid file, as in the master.
    assert (
        socket_path(None, None, {"RUNTIME_DIRECTORY": "/run/s"}, str(config))
        == "/run/s/app-server.sock"
    )
    config.write_text('control_socket = "/srv/c.sock"\n')
    assert socket_path(None, None, {"RUNTIME_DIRECTORY": "/run/s"}, str(config)) == "/srv/c.sock"
    assert (
        socket_path(None, None, {"APP_SERVER_CONTROL_SOCKET": "/e.sock"}, str(config)) == "/e.sock"
    )
    config.write_text('control_socket = "off"\n')
    assert socket_path(None, None, {}, str(config)) is None


# -- reload --wait -------------------------------------------------------------------------------


class Answers:
    def __init__(self) -> None:
        self.sent: list[tuple[Conn, dict[str, Any]]] = []

    def __call__(self, conn: Conn, answer: dict[str, Any]) -> None:
        self.sent.append((conn, answer))


def conn() -> Conn:
    return Conn(None, 0, 0.0)  # type: ignore[arg-type]  # never touched by ReloadWaits


def test_reload_wait_answers_once_every_retired_worker_exited() -> None:
    slots = make_slots(2)
    old = [worker(s, 10 + s.index) for s in slots]
    reload = Reload()
    reload.handle(Started(), view(slots))
    answers = Answers()
    waits = ReloadWaits(answers)
    client = conn()
    waits.wait(reload, client)
    ended: ReloadEnded | None = None
    for index, slot in enumerate(slots):
        slot.successor = worker(slot, 20 + index, Phase.BOOTING, serving=False)
        new = slot.successor
        promote(new)
        old[index].phase = Phase.STOPPING  # told STOP by the loop on promotion
        actions = reload.handle(WorkerReady(new), view(slots))
        ended = next((a for a in actions if isinstance(a, ReloadEnded)), ended)
    assert ended is not None and ended.retired == (old[0], old[1])
    waits.ended(reload, ended.failure, ended.retired, ended.replaced, ended.took_s)
    assert answers.sent == []  # the last new worker is ready, but the old ones still drain
    exited(old[1], 0)
    waits.exited(old[1].pid)
    assert answers.sent == []
    exited(old[0], 0)
    waits.exited(old[0].pid)
    assert answers.sent == [(client, {"ok": True, "replaced": 2, "took_s": 0.0})]


def test_reload_wait_answers_an_aborted_reload_at_once_with_its_reason() -> None:
    answers = Answers()
    waits = ReloadWaits(answers)
    reload, client = object(), conn()
    waits.wait(reload, client)
    waits.ended(reload, "the new worker for slot 0 failed to start (exit 3)", (), 1, 0.1)
    assert answers.sent == [
        (
            client,
            {
                "ok": False,
                "error": "reload aborted: the new worker for slot 0 failed to start (exit 3)",
            },
        )
    ]


def test_reload_wait_is_told_when_the_server_stops_meanwhile() -> None:
    slots = make_slots(1)
    old = worker(slots[0], 10)
    answers = Answers()
    waits = ReloadWaits(answers)
    draining, queued = conn(), conn()
    first, second = object(), object()
    waits.wait(first, draining)
    waits.wait(second, queued)
    waits.ended(first, None, (old,), 1, 0.5)
    waits.abandon("the server is stopping")
    assert {id(c) for c, a in answers.sent if a["ok"] is False} == {id(draining), id(queued)}
    waits.exited(old.pid)
    assert len(answers.sent) == 2  # nobody is answered twice


# -- the human form --------------------------------------------------------------------------


def test_status_is_an_aligned_table() -> None:
    answer = json.loads(
        json.dumps(
            {
                "master": {
                    "pid": 1,
                    "state": "ready",
                    "workers": 2,
                    "uptime_s": 3725.0,
                    "operation": None,
                },
                "workers": [
                    {
                        "pid": 7,
                        "slot": 0,
                        "state": "ready",
                        "uptime_s": 5.0,
                        "requests": 123456,
                        "http_connections": 3,
                        "websockets": 0,
                        "rss_bytes": 31457280,
                        "cpu_s": 1.5,
                        "heartbeat_age_s": 0.1,
                    },
                    {
                        "pid": 12345,
                        "slot": 1,
                        "state": "stopping",
                        "uptime_s": 65.0,
                        "requests": 1,
                        "http_connections": 0,
                        "websockets": 12,
                        "rss_bytes": 0,
                        "cpu_s": 0.0,
                        "heartbeat_age_s": 2.25,
                    },
                ],
            }
        )
    )
    lines = render("status", answer).splitlines()
    assert lines[0] == "master 1: ready, 2 workers, up 1h02m"
    header, first, second = lines[1:]
    # Every column ends where its header ends (numbers right-aligned), STATE starts with it.
    for name in ("PID", "SLOT", "REQUESTS", "HTTP", "WS", "RSS", "CPU", "HEARTBEAT"):
        end = header.index(name) + len(name)
        assert first[end - 1] != " " and second[end - 1] != " ", name
    assert first.index("ready") == second.index("stopping") == header.index("STATE")
    assert "123456" in first and "1m05s" in second and "30.0M" in first
