"""``app-server ctl`` against a real master, and HUP re-reading the config file.

System tier: a real master (``python -m app_server``) with real workers, the
real client (``python -m app_server ctl``) as a subprocess, raw unix sockets
for the protocol's edges, and a forked child that drops to ``nobody`` for the
peer-uid check. Nothing sleeps to synchronise: each step polls with a deadline.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from websockets.sync.client import connect as ws_connect

from app_server.master.ctl_server import IDLE_TIMEOUT_S, MAX_FRAME, encode_frame
from tests.system.harness import Master, clean_env, free_port, poll
from tests.system.test_systemd_master import NotifyListener

APP = """\
import asyncio
import os
from pathlib import Path

from app_server import App, text

VERSION = (Path(__file__).parent / "version.txt").read_text().strip()
app = App("ctl")


@app.get("/")
async def index(request):
    return text(f"{VERSION} {os.getpid()}")


@app.get("/slow")
async def slow(request):
    await asyncio.sleep(3)
    return text(f"slow {os.getpid()}")


@app.post("/upload")
async def upload(request):
    return text(str(len(request.body)))


@app.websocket("/ws")
async def ws(request, ws):
    async for message in ws:
        await ws.send(message)
"""
BROKEN_APP = 'raise RuntimeError("this release is broken on purpose")\n'
BASE = ["app:app", "--graceful-timeout", "5", "--timeout", "10", "--no-access-log"]
WORKER_KEYS = {
    "pid",
    "slot",
    "state",
    "uptime_s",
    "requests",
    "http_connections",
    "websockets",
    "rss_bytes",
    "cpu_s",
    "heartbeat_age_s",
}
WORKER_TYPES: dict[str, type | tuple[type, ...]] = {
    "pid": int,
    "slot": int,
    "state": str,
    "uptime_s": (int, float),
    "requests": int,
    "http_connections": int,
    "websockets": int,
    "rss_bytes": int,
    "cpu_s": (int, float),
    "heartbeat_age_s": (int, float),
}
STATES = {"starting", "ready", "stopping"}


def start(
    master: Any,
    tmp_path: Path,
    workers: int = 2,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    socket_arg: bool = True,
    workers_arg: bool = True,
    **kwargs: Any,
) -> Master:
    """``workers_arg=False``: the count comes from the config file (the command line
    would win over it)."""
    (tmp_path / "version.txt").write_text("v0\n")
    args = [*BASE, *(["--workers", str(workers)] if workers_arg else []), *extra]
    if socket_arg:
        args += ["--control-socket", str(tmp_path / "ctl.sock")]
    m: Master = master(
        args, files={"app.py": APP}, env=env or clean_env(PYTHONDONTWRITEBYTECODE="1"), **kwargs
    )
    m.wait_log(f"all {workers} workers ready", timeout=30)
    m.wait_workers(lambda pids: len(pids) == workers, timeout=10)
    return m


def ctl(
    *args: str, sock: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    where = ["--socket", str(sock)] if sock is not None else []
    return subprocess.run(
        [sys.executable, "-m", "app_server", "ctl", *where, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else clean_env(),
    )


def status(sock: Path) -> dict[str, Any]:
    done = ctl("status", "--json", sock=sock)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def raw_request(path: Path, payload: bytes, timeout: float = 10.0) -> dict[str, Any] | None:
    """Send raw bytes, read one framed answer (None if closed without one)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        with contextlib.suppress(BrokenPipeError):  # refused: answered and closed at once
            sock.sendall(payload)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if len(data) < 4:
        return None
    (length,) = struct.unpack("!I", data[:4])
    return json.loads(data[4 : 4 + length])  # type: ignore[no-any-return]


def healthy(m: Master) -> bool:
    return httpx.get(m.metrics_url + "/healthz", timeout=5).status_code == 200


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- status -------------------------------------------------------------------------------------


def test_status_json_is_the_spec_object_from_heartbeats(master: Any, tmp_path: Path) -> None:
    m = start(master, tmp_path)
    sock = tmp_path / "ctl.sock"
    for _ in range(5):
        assert httpx.get(m.url + "/").status_code == 200
    held = socket.create_connection(("127.0.0.1", m.port))  # an open, idle HTTP connection
    with ws_connect(f"ws://127.0.0.1:{m.port}/ws") as ws:
        ws.send("x")
        assert ws.recv(timeout=5) == "x"

        def counted() -> dict[str, Any] | None:
            got = status(sock)
            workers = got["workers"]
            ok = (
                sum(w["requests"] for w in workers) >= 5
                and sum(w["http_connections"] for w in workers) >= 1
                and sum(w["websockets"] for w in workers) == 1
            )
            return got if ok else None

        try:
            got = poll(counted, 10, "requests and open connections in the heartbeats")
        finally:
            held.close()
    assert set(got) == {"master", "workers"}
    assert got["master"]["pid"] == m.pid and got["master"]["state"] == "ready"
    assert got["master"]["workers"] == 2
    assert sorted(w["pid"] for w in got["workers"]) == sorted(m.workers())
    for w in got["workers"]:
        assert set(w) == WORKER_KEYS
        for key, kind in WORKER_TYPES.items():
            assert isinstance(w[key], kind) and not isinstance(w[key], bool), (key, w[key])
        assert w["state"] in STATES and w["slot"] in (0, 1)
        assert w["rss_bytes"] > 1_000_000 and w["cpu_s"] >= 0 and 0 <= w["heartbeat_age_s"] < 5
    # --json is accepted before the command too; the table has a header and a row a worker.
    before = ctl("--json", "status", sock=sock)
    assert before.returncode == 0 and set(json.loads(before.stdout)) == {"master", "workers"}
    table = ctl("status", sock=sock)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[1].split() == [
        "PID",
        "SLOT",
        "STATE",
        "UPTIME",
        "REQUESTS",
        "HTTP",
        "WS",
        "RSS",
        "CPU",
        "HEARTBEAT",
    ]
    assert len(lines) == 4 and {len(line) for line in lines[2:]} == {len(lines[1])}


def test_status_answers_while_a_worker_is_stopped(master: Any, tmp_path: Path) -> None:
    """A worker that cannot answer (SIGSTOP) is shown from the master's records,
    its heartbeat age growing, without the master waiting for it."""
    m = start(master, tmp_path, extra=("--timeout", "30"))
    sock = tmp_path / "ctl.sock"
    frozen = m.workers()[0]
    os.kill(frozen, 19)  # SIGSTOP
    try:

        def aged() -> bool:
            rows = {w["pid"]: w for w in status(sock)["workers"]}
            return rows[frozen]["heartbeat_age_s"] >= 1.0

        poll(aged, 10, "the stopped worker's heartbeat age grows")
    finally:
        os.kill(frozen, 18)  # SIGCONT


# -- reload --wait --------------------------------------------------------------------------------


def test_reload_wait_returns_after_the_old_workers_exited(master: Any, tmp_path: Path) -> None:
    m = start(master, tmp_path)
    old = m.workers()
    # A request in flight keeps one old worker draining well after its
    # successor is ready: the answer must wait for it.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(httpx.get, m.url + "/slow", timeout=30)
        poll(
            lambda: (
                sum(w["http_connections"] for w in status(tmp_path / "ctl.sock")["workers"]) >= 1
            ),
            10,
            "the slow request in flight",
        )
        (tmp_path / "version.txt").write_text("v1\n")
        done = ctl("reload", "--wait", sock=tmp_path / "ctl.sock")
        assert done.returncode == 0, done.stderr
        assert "2 workers replaced" in done.stdout
        assert not any(alive(pid) for pid in old)  # exited, not merely told to stop
        answer = slow.result()
    assert answer.status_code == 200 and int(answer.text.split()[1]) in old
    assert httpx.get(m.url + "/").text.startswith("v1 ")
    assert set(m.workers()).isdisjoint(old)


def test_reload_wait_fails_with_the_reason_when_the_new_code_is_broken(
    master: Any, tmp_path: Path
) -> None:
    m = start(master, tmp_path)
    old = sorted(m.workers())
    (tmp_path / "app.py").write_text(BROKEN_APP)
    done = ctl("reload", "--wait", "--json", sock=tmp_path / "ctl.sock")
    assert done.returncode == 1
    assert "reload aborted" in done.stderr and "failed to start" in done.stderr
    assert "exit 3" in json.loads(done.stdout)["error"]
    assert sorted(m.workers()) == old  # the old workers keep serving
    assert httpx.get(m.url + "/").text.startswith("v0 ")


def test_reload_without_wait_returns_at_once(master: Any, tmp_path: Path) -> None:
    m = start(master, tmp_path, workers=1)
    old = m.workers()
    done = ctl("reload", sock=tmp_path / "ctl.sock")
    assert done.returncode == 0, done.stderr
    m.wait_workers(lambda pids: len(pids) == 1 and pids != old)


# -- scale, add, remove, drain, reopen-logs, stop ----------------------------------------------


def test_scale_add_remove_and_drain(master: Any, tmp_path: Path) -> None:
    m = start(master, tmp_path)
    sock = tmp_path / "ctl.sock"
    assert ctl("scale", "4", sock=sock).returncode == 0
    m.wait_workers(lambda pids: len(pids) == 4)
    poll(lambda: [w["slot"] for w in status(sock)["workers"]] == [0, 1, 2, 3], 10, "4 slots")
    assert ctl("remove", sock=sock).returncode == 0
    poll(lambda: len(status(sock)["workers"]) == 3, 15, "one worker fewer")
    assert ctl("add", "--json", sock=sock).returncode == 0
    poll(lambda: len(status(sock)["workers"]) == 4, 15, "one worker more")
    assert ctl("scale", "1", sock=sock).returncode == 0
    poll(lambda: len(m.workers()) == 1 and status(sock)["master"]["workers"] == 1, 30, "1 worker")
    refused = ctl("scale", "0", sock=sock)
    assert refused.returncode == 1 and ">= 1" in refused.stderr

    drained = m.workers()[0]
    done = ctl("drain", "0", "--json", sock=sock)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"pid": drained, "slot": 0}
    m.wait_log(f"worker {drained} (slot 0) stopped")
    log = m.log()
    # The replacement was ready before the drained worker was told to stop.
    new = m.workers()
    assert len(new) == 1 and new[0] != drained
    assert log.index(f"worker {new[0]} ready (slot 0)") < log.index(
        f"worker {drained} (slot 0) stopped"
    )
    unknown = ctl("drain", "7", sock=sock)
    assert unknown.returncode == 1 and "no slot 7" in unknown.stderr


def test_reopen_logs_is_usr1(master: Any, tmp_path: Path) -> None:
    m = start(master, tmp_path, workers=1)
    done = ctl("reopen-logs", sock=tmp_path / "ctl.sock")
    assert done.returncode == 0, done.stderr
    assert healthy(m)


@pytest.mark.parametrize(
    ("args", "line"),
    [(("stop",), "ctl stop: graceful shutdown"), (("stop", "--now"), "ctl stop --now: immediate")],
)
def test_stop(master: Any, tmp_path: Path, args: tuple[str, ...], line: str) -> None:
    m = start(master, tmp_path)
    sock = tmp_path / "ctl.sock"
    done = ctl(*args, sock=sock)
    assert done.returncode == 0, done.stderr
    assert m.wait_exit(30) == 0
    assert line in m.log()
    assert not sock.exists()  # removed on exit


# -- the socket: its mode, who may use it, bad requests, idle clients -------------------------


@contextlib.contextmanager
def world_reachable_dir() -> Iterator[Path]:
    """A directory ``nobody`` can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="ctl-", dir="/tmp"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_nobody(path: Path) -> str:
    """Connect and ask ``status`` from a forked child running as ``nobody``."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            try:
                answer = raw_request(path, encode_frame({"command": "stop"}))
                result = json.dumps(answer)
            except OSError as exc:
                result = f"OSError {exc.errno}"
            os.write(write_end, result.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        result = pipe.read().decode()
    os.waitpid(pid, 0)
    return result


def test_the_socket_is_0600_and_other_users_are_refused(master: Any, tmp_path: Path) -> None:
    with world_reachable_dir() as directory:
        sock = directory / "ctl.sock"
        m = start(master, tmp_path, extra=("--control-socket", str(sock)), socket_arg=False)
        mode = os.stat(sock).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        assert as_nobody(sock) == "OSError 13"  # EACCES: the file's mode
        # Even if the mode is loosened by someone, the peer's uid is checked.
        os.chmod(sock, 0o666)
        answer = json.loads(as_nobody(sock))
        assert answer["ok"] is False and "permission denied: uid 65534" in answer["error"]
        assert "refused a client of uid 65534" in m.log()
        assert healthy(m) and m.process.poll() is None  # the "stop" was not obeyed


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (struct.pack("!I", 9) + b"{not json", "bad request: not JSON"),
        (struct.pack("!I", 7) + b"[1,2,3]", "bad request: a request is a JSON object"),
        (struct.pack("!I", MAX_FRAME + 1) + b"{", "bad request: frame of"),
        (encode_frame({"command": "rm -rf"}), "unknown command 'rm -rf'"),
        (encode_frame({"cmd": "status"}), 'a request needs a "command" string'),
        (encode_frame({"command": "drain", "slot": "0"}), "drain: no slot '0'"),
        (encode_frame({"command": "scale", "workers": True}), "scale: the worker count"),
    ],
)
def test_bad_requests_get_an_error_and_the_master_serves_on(
    master: Any, tmp_path: Path, payload: bytes, error: str
) -> None:
    m = start(master, tmp_path, workers=1)
    sock = tmp_path / "ctl.sock"
    answer = raw_request(sock, payload)
    assert answer is not None and answer["ok"] is False and error in answer["error"], answer
    assert healthy(m) and httpx.get(m.url + "/").status_code == 200
    assert status(sock)["master"]["state"] == "ready"


def test_an_idle_client_is_dropped_without_holding_the_master(master: Any, tmp_path: Path) -> None:
    m = start(master, tmp_path, workers=1)
    sock_path = tmp_path / "ctl.sock"
    with socket.socket(socket.AF_UNIX) as idle, socket.socket(socket.AF_UNIX) as half:
        idle.connect(str(sock_path))
        half.connect(str(sock_path))
        half.sendall(struct.pack("!I", 100) + b"{")  # half a frame, then nothing
        opened = time.monotonic()
        # While both hang on the socket, the master answers everyone else.
        assert healthy(m)
        assert status(sock_path)["master"]["state"] == "ready"
        assert httpx.get(m.url + "/").status_code == 200
        for client in (idle, half):
            client.settimeout(IDLE_TIMEOUT_S + 10)
            assert client.recv(1) == b""  # closed by the master at its idle timeout
        assert time.monotonic() - opened >= IDLE_TIMEOUT_S - 0.5
    assert healthy(m)


# -- where the socket goes ------------------------------------------------------------------------


def test_default_socket_under_runtime_directory(master: Any, tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir()
    env = clean_env(PYTHONDONTWRITEBYTECODE="1", RUNTIME_DIRECTORY=str(runtime))
    m = start(master, tmp_path, workers=1, env=env, socket_arg=False)
    assert stat.S_IMODE(os.stat(runtime / "app-server.sock").st_mode) == 0o600
    done = ctl("status", "--json", env=env)  # no --socket: found as systemd's ExecReload would
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["master"]["pid"] == m.pid
    assert ctl("reload", "--wait", env=env).returncode == 0


def test_default_socket_beside_the_pid_file(master: Any, tmp_path: Path) -> None:
    m = start(
        master, tmp_path, workers=1, extra=("--pid", str(tmp_path / "server.pid")), socket_arg=False
    )
    assert (tmp_path / "server.ctl").exists()
    done = ctl("--pid", str(tmp_path / "server.pid"), "status", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["master"]["pid"] == m.pid


def test_the_client_finds_the_socket_in_the_masters_config_file(
    master: Any, tmp_path: Path
) -> None:
    config = with_config(tmp_path, f'control_socket = "{tmp_path / "from-file.sock"}"\n')
    m = start(master, tmp_path, workers=1, extra=config, socket_arg=False)
    done = ctl(*config, "status", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["master"]["pid"] == m.pid


def test_an_explicit_socket_that_cannot_be_created_stops_the_start(
    master: Any, tmp_path: Path
) -> None:
    m = master(
        [*BASE, "--control-socket", "/nonexistent-dir/ctl.sock"],
        files={"app.py": APP},
        env=clean_env(),
    )
    (tmp_path / "version.txt").write_text("v0\n")
    assert m.wait_exit(30) == 2
    lines = m.log().strip().splitlines()
    assert lines == [
        "app-server: cannot create the control socket /nonexistent-dir/ctl.sock: "
        "No such file or directory (--control-socket)"
    ]


def test_a_default_socket_that_cannot_be_created_is_a_warning(master: Any, tmp_path: Path) -> None:
    env = clean_env(PYTHONDONTWRITEBYTECODE="1", RUNTIME_DIRECTORY="/nonexistent-dir")
    m = start(master, tmp_path, workers=1, env=env, socket_arg=False)
    assert "WARNING" in m.log() and "app-server ctl is unavailable" in m.log()
    assert httpx.get(m.url + "/").status_code == 200
    done = ctl("status", env=env)
    assert done.returncode == 2 and "cannot connect" in done.stderr


def test_a_live_masters_socket_is_not_taken_over(master: Any, tmp_path: Path) -> None:
    first = start(master, tmp_path, workers=1)
    second = master(
        [*BASE, "--control-socket", str(tmp_path / "ctl.sock")], files={}, env=clean_env()
    )
    assert second.wait_exit(30) == 2
    assert "another server is listening on it" in second.log()
    assert status(tmp_path / "ctl.sock")["master"]["pid"] == first.pid


# -- HUP re-reads the config file ---------------------------------------------------------------


def with_config(tmp_path: Path, text: str) -> tuple[str, ...]:
    (tmp_path / "app-server.toml").write_text(text)
    return ("--config", str(tmp_path / "app-server.toml"))


def upload(m: Master, size: int) -> int:
    return httpx.post(m.url + "/upload", content=b"x" * size).status_code


def test_hup_applies_a_changed_worker_setting(master: Any, tmp_path: Path) -> None:
    m = start(master, tmp_path, extra=with_config(tmp_path, "request_max_size = 1000\n"))
    assert upload(m, 500) == 200
    with_config(tmp_path, "request_max_size = 100\n")
    done = ctl("reload", "--wait", sock=tmp_path / "ctl.sock")
    assert done.returncode == 0, done.stderr
    assert upload(m, 500) == 413


def test_hup_signal_applies_a_changed_worker_count(master: Any, tmp_path: Path) -> None:
    m = start(master, tmp_path, extra=with_config(tmp_path, "workers = 2\n"), workers_arg=False)
    with_config(tmp_path, "workers = 3\n")
    m.signal(1)  # SIGHUP
    m.wait_workers(lambda pids: len(pids) == 3)
    poll(lambda: status(tmp_path / "ctl.sock")["master"]["workers"] == 3, 10, "3 desired")
    with_config(tmp_path, "workers = 1\n")
    assert ctl("reload", "--wait", sock=tmp_path / "ctl.sock").returncode == 0
    m.wait_workers(lambda pids: len(pids) == 1)


def test_the_environment_keeps_its_precedence_over_the_reread_file(
    master: Any, tmp_path: Path
) -> None:
    env = clean_env(PYTHONDONTWRITEBYTECODE="1", APP_SERVER_REQUEST_MAX_SIZE="1000")
    m = start(master, tmp_path, env=env, extra=with_config(tmp_path, "request_max_size = 50\n"))
    with_config(tmp_path, "request_max_size = 10\n")
    assert ctl("reload", "--wait", sock=tmp_path / "ctl.sock").returncode == 0
    assert upload(m, 500) == 200


def test_an_invalid_config_aborts_the_reload(master: Any, tmp_path: Path) -> None:
    m = start(
        master,
        tmp_path,
        extra=with_config(tmp_path, "request_max_size = 1000\n"),
        workers_arg=False,
        workers=1,
    )
    old = sorted(m.workers())
    with_config(tmp_path, 'request_max_size = 100\nworkers = "many"\n')
    done = ctl("reload", "--wait", sock=tmp_path / "ctl.sock")
    assert done.returncode == 1
    assert "reload aborted" in done.stderr and "'many' for workers" in done.stderr
    aborted = [line for line in m.log().splitlines() if "reload aborted" in line]
    assert len(aborted) == 1 and "'many' for workers" in aborted[0]
    m.signal(1)  # HUP: the same, one line
    m.wait_log("HUP: reload aborted")
    assert sorted(m.workers()) == old
    assert upload(m, 500) == 200  # the old settings keep serving
    # Counted as failed reloads (what the alert on failed reloads watches).
    metrics = httpx.get(m.metrics_url + "/metrics").text
    assert 'app_server_reloads_total{result="failed"} 2.0' in metrics


def test_a_changed_restart_only_setting_is_named_and_kept(master: Any, tmp_path: Path) -> None:
    port = free_port()
    config = f'request_max_size = 1000\nmetrics_bind = "127.0.0.1:{port}"\n'
    m = start(master, tmp_path, extra=with_config(tmp_path, config), add_metrics_bind=False)
    with_config(tmp_path, f'request_max_size = 100\nmetrics_bind = "127.0.0.1:{free_port()}"\n')
    assert ctl("reload", "--wait", sock=tmp_path / "ctl.sock").returncode == 0
    lines = [line for line in m.log().splitlines() if "need" in line and "restart" in line]
    assert len(lines) == 1 and "metrics_bind" in lines[0]
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    assert upload(m, 500) == 413  # what can change did


def test_an_invalid_config_still_answers_systemds_reload(master: Any, tmp_path: Path) -> None:
    """Under Type=notify-reload systemd waits for RELOADING=1 then READY=1 after
    its HUP: an aborted reload must send both (READY with the reason)."""
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        env = clean_env(PYTHONDONTWRITEBYTECODE="1", NOTIFY_SOCKET=str(listener.path))
        m = start(
            master,
            tmp_path,
            workers=1,
            env=env,
            extra=with_config(tmp_path, "request_max_size = 1000\n"),
        )
        listener.start(m, "all 1 workers ready")
        listener.wait("READY")
        with_config(tmp_path, "request_max_size = -1\n")
        m.signal(1)  # SIGHUP
        listener.wait("RELOADING")
        ready = listener.wait("READY", count=2)[1]
        assert ready.fields["STATUS"].startswith(
            "reload failed: invalid value -1 for request_max_size"
        )
    finally:
        listener.close()
