"""``python -m app_server`` as a real subprocess: start-up errors are one line on
stderr with exit code 2 and start nothing; a good command line serves."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from app_server.settings.schema import SETTINGS
from tests.conftest import wait_until

MARKER = "imported.marker"

# Error paths must not depend on the framework: a plain object stands in for the app.
PLAIN_APP = f"""
import pathlib
pathlib.Path({MARKER!r}).write_text("imported")
app = object()

def broken_factory():
    raise RuntimeError("factory exploded")
"""

BROKEN_IMPORT = """
import no_such_dependency_xyz
app = object()
"""

REAL_APP = """
from app_server import App, text

app = App("cli-test")
app.config.REQUEST_MAX_SIZE = 4


@app.get("/")
async def index(request):
    return text("hello")


@app.post("/echo")
async def echo(request):
    return text(request.body.decode())


def create_app():
    return app
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "plainapp.py").write_text(PLAIN_APP)
    (tmp_path / "brokenapp.py").write_text(BROKEN_IMPORT)
    (tmp_path / "realapp.py").write_text(textwrap.dedent(REAL_APP))
    return tmp_path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP_SERVER_")}
    env.update(extra)
    return env


def run_cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app_server", *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- --version and --help ------------------------------------------------------------


def test_version(project: Path) -> None:
    result = run_cli(project, "--version")
    assert result.returncode == 0
    assert result.stdout == f"app-server {importlib.metadata.version('app-server')}\n"


def test_help_lists_every_flag(project: Path) -> None:
    result = run_cli(project, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: app-server")
    for setting in SETTINGS:
        for flag in setting.flags:
            assert flag in result.stdout


# -- settings errors: nothing is imported, nothing is bound ---------------------------------


def assert_settings_error(project: Path, result: subprocess.CompletedProcess[str]) -> str:
    line = one_error_line(result)
    assert not (project / MARKER).exists(), "the application was imported"
    return line


def test_unknown_flag(project: Path) -> None:
    result = run_cli(project, "plainapp:app", "--request-max-sise", "5")
    assert assert_settings_error(project, result) == (
        "app-server: unknown setting '--request-max-sise' on the command line; "
        "did you mean '--request-max-size'?"
    )


def test_flag_without_its_value(project: Path) -> None:
    result = run_cli(project, "plainapp:app", "--workers")
    assert assert_settings_error(project, result) == (
        "app-server: argument --workers: expected one argument (see app-server --help)"
    )


def test_missing_application_argument(project: Path) -> None:
    result = run_cli(project)
    assert assert_settings_error(project, result).startswith("app-server: missing MODULE:ATTRIBUTE")


def test_bad_value(project: Path) -> None:
    result = run_cli(project, "plainapp:app", "--request-max-size", "abc")
    assert assert_settings_error(project, result) == (
        "app-server: invalid value 'abc' for request_max_size (from --request-max-size): "
        "expected a non-negative integer"
    )


def test_bad_environment_value(project: Path) -> None:
    result = run_cli(project, "plainapp:app", APP_SERVER_WS_MAX_QUEUE="-3")
    assert assert_settings_error(project, result) == (
        "app-server: invalid value '-3' for ws_max_queue (from APP_SERVER_WS_MAX_QUEUE): "
        "expected a positive integer"
    )


def test_unknown_toml_key(project: Path) -> None:
    (project / "config.toml").write_text("request_max_sise = 5\n")
    result = run_cli(project, "plainapp:app", "--config", "config.toml")
    assert assert_settings_error(project, result) == (
        "app-server: unknown setting 'request_max_sise' in config.toml; "
        "did you mean 'request_max_size'?"
    )


def test_unknown_environment_variable(project: Path) -> None:
    result = run_cli(project, "plainapp:app", APP_SERVER_REQUEST_MAX_SISE="5")
    assert assert_settings_error(project, result) == (
        "app-server: unknown setting 'APP_SERVER_REQUEST_MAX_SISE' in the environment; "
        "did you mean 'APP_SERVER_REQUEST_MAX_SIZE'?"
    )


# -- application errors ------------------------------------------------------------------------


def test_missing_module(project: Path) -> None:
    line = one_error_line(run_cli(project, "nosuchmodule:app"))
    assert line.startswith("app-server: module 'nosuchmodule' not found (searched ")


def test_missing_attribute(project: Path) -> None:
    line = one_error_line(run_cli(project, "plainapp:nope"))
    assert line == "app-server: module 'plainapp' has no attribute 'nope'"


def test_import_error_inside_the_module(project: Path) -> None:
    line = one_error_line(run_cli(project, "brokenapp:app"))
    assert line == (
        "app-server: importing module 'brokenapp' failed: ModuleNotFoundError: "
        f"No module named 'no_such_dependency_xyz' (at {project / 'brokenapp.py'}:2)"
    )


def test_factory_that_raises(project: Path) -> None:
    line = one_error_line(run_cli(project, "plainapp:broken_factory()"))
    assert line.startswith(
        "app-server: application factory 'plainapp:broken_factory()' raised "
        "RuntimeError: factory exploded (at "
    )


def test_app_dir_chooses_where_to_import_from(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    line = one_error_line(run_cli(elsewhere, "--app-dir", str(project), "plainapp:nope"))
    assert line == "app-server: module 'plainapp' has no attribute 'nope'"


def test_metrics_port_in_use_exits_1_and_leaves_no_socket_file(project: Path) -> None:
    sock_path = project / "app.sock"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli(
            project,
            "realapp:app",
            "--bind",
            f"unix:{sock_path}",
            "--metrics-bind",
            f"127.0.0.1:{port}",
        )
    assert result.returncode == 1
    assert result.stderr.startswith(f"app-server: cannot listen on 127.0.0.1:{port}: ")
    assert result.stderr.rstrip().endswith("(--metrics-bind)")
    assert not sock_path.exists()


def test_port_in_use_exits_1(project: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli(project, "realapp:app", "--port", str(port), "--no-reuse-port")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"app-server: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(another process is listening there)"
    )


# -- serving ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_answer(url: str, process: subprocess.Popen[str], deadline_s: float) -> httpx.Response:
    deadline = time.monotonic() + deadline_s
    while True:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        try:
            return httpx.get(url, timeout=1.0)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)  # polling interval, not synchronisation: the loop checks the condition


@contextmanager
def serving(
    cwd: Path, *args: str, log_path: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The server answering on a free port; stopped on exit. With ``log_path``
    its output goes to that file (readable while it runs) instead of pipes."""
    port = free_port()
    log_file = open(log_path, "w") if log_path is not None else None  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "app_server", *args, "--port", str(port)],
        cwd=cwd,
        env=clean_env(),
        text=True,
        stdout=log_file if log_file is not None else subprocess.PIPE,
        stderr=log_file if log_file is not None else subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_answer(base + "/", process, deadline_s=30)
        yield base, process
    finally:
        stop(process)
        if log_file is not None:
            log_file.close()


def stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM (a graceful stop), then SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serves_requests_with_the_app_config_layer(project: Path) -> None:
    with serving(project, "realapp:create_app()") as (base, process):
        assert httpx.get(base + "/").text == "hello"
        # app.config.REQUEST_MAX_SIZE = 4 set in code applies.
        assert httpx.post(base + "/echo", content=b"12345").status_code == 413
    stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr
    assert '"GET / HTTP/1.1" 200 5 ' in stderr


def test_flags_beat_app_config_and_json_logs(project: Path) -> None:
    args = ("realapp:app", "--request-max-size", "100", "--log-format", "json", "--workers", "2")
    log_path = project / "server.log"

    def all_ready() -> bool:
        lines = log_path.read_text().splitlines()
        # A line still being written is not whole yet: only whole objects count.
        return any(
            json.loads(line).get("message") == "all 2 workers ready"
            for line in lines
            if line.endswith("}")
        )

    with serving(project, *args, log_path=log_path) as (base, process):
        response = httpx.post(base + "/echo", content=b"12345")
        assert (response.status_code, response.text) == (200, "12345")
        # The first worker answers before the second is ready: stopping now
        # would cut the start-up short (and the line below never be logged).
        wait_until(all_ready, timeout=30)
    assert process.returncode == 0, log_path.read_text()
    stderr = log_path.read_text()
    records = [json.loads(line) for line in stderr.splitlines()]
    master = next(r for r in records if r.get("message") == "all 2 workers ready")
    assert set(master) == {"time", "level", "logger", "pid", "message"}
    assert master["pid"] == process.pid
    workers = {
        int(r["message"].split()[1])
        for r in records
        if "message" in r
        and r["message"].startswith("worker ")
        and r["message"].endswith("stopped (exit 0)")
    }
    assert len(workers) == 2 and process.pid not in workers
    access = next(r for r in records if r.get("type") == "access" and r["method"] == "POST")
    assert set(access) == {
        "time",
        "type",
        "client",
        "method",
        "path",
        "protocol",
        "status",
        "bytes",
        "duration_ms",
        "pid",
    }
    assert (access["path"], access["protocol"], access["status"], access["bytes"]) == (
        "/echo",
        "HTTP/1.1",
        200,
        5,
    )
    assert access["pid"] in workers  # served by a worker, not the master


# -- App.run(): the same start-up from a script -------------------------------------------


def write_script(project: Path, run_call: str) -> Path:
    script = project / "script.py"
    script.write_text(
        textwrap.dedent(f"""
        from realapp import app

        if __name__ == "__main__":
            raise SystemExit({run_call})
    """)
    )
    return script


def test_app_run_rejects_an_unknown_option(project: Path) -> None:
    script = write_script(project, "app.run(port=0, wokers=2)")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert one_error_line(result) == (
        "app-server: unknown setting 'wokers' in app.run(); did you mean 'workers'?"
    )


def test_app_run_serves(project: Path) -> None:
    port = free_port()
    script = write_script(project, f"app.run(port={port}, access_log=False)")
    process = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=project,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        response = wait_for_answer(f"http://127.0.0.1:{port}/", process, deadline_s=30)
        assert response.text == "hello"
    finally:
        stop(process)
    _, stderr = process.communicate()
    assert process.returncode == 0, stderr
    assert "HTTP/1.1" not in stderr  # access_log=False reached the worker


def test_without_uvloop_the_asyncio_loop_serves(project: Path) -> None:
    # Where uvloop cannot be imported, the worker falls back on asyncio's loop.
    script = project / "no_uvloop.py"
    port = free_port()
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.modules["uvloop"] = None  # makes "import uvloop" raise ImportError
        import asyncio
        from app_server import text
        from app_server.cli import main
        from realapp import app

        @app.get("/loop")
        async def loop_kind(request):
            return text(type(asyncio.get_running_loop()).__module__)

        raise SystemExit(main(["realapp:app", "--port", "{port}"]))
    """)
    )
    process = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=project,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_for_answer(base + "/", process, deadline_s=30).text == "hello"
        with httpx.Client() as client:  # keep-alive and a body on the fallback loop
            assert client.post(base + "/echo", content=b"1234").text == "1234"
            assert client.post(base + "/echo", content=b"12345").status_code == 413
            assert client.get(base + "/loop").text.startswith("asyncio")
    finally:
        stop(process)
    _, stderr = process.communicate()
    assert process.returncode == 0, stderr


WS_APP = """
from app_server import App

app = App("ws-cli")
app.config.WEBSOCKET_MAX_SIZE = 8


@app.get("/")
async def index(request):
    return "ok"


@app.websocket("/echo")
async def echo(ws):
    async for message in ws:
        await ws.send(message)
"""


def _ws_echo_close_code(
    base: str, message: str, extensions: bool = False
) -> tuple[int | None, str]:
    import asyncio

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def go() -> tuple[int | None, str]:
        url = base.replace("http://", "ws://") + "/echo"
        async with connect(url, compression="deflate" if extensions else None) as ws:
            await ws.send(message)
            try:
                echoed = await ws.recv()
            except ConnectionClosed:
                return ws.close_code, ""
            header = ws.response.headers.get("sec-websocket-extensions", "")  # type: ignore[union-attr]
            return None, f"{echoed}|{header}"

    return asyncio.run(asyncio.wait_for(go(), 20))


@pytest.mark.parametrize(
    ("args", "env", "fits"),
    [
        ((), {}, "x" * 8),  # app.config.WEBSOCKET_MAX_SIZE = 8 applies
        (("--ws-max-size", "20"), {}, "x" * 20),  # the flag beats app.config
        ((), {"APP_SERVER_WS_MAX_SIZE": "12"}, "x" * 12),  # so does the environment
    ],
    ids=["app-config", "flag", "env"],
)
def test_websocket_settings_reach_the_worker(
    project: Path, args: tuple[str, ...], env: dict[str, str], fits: str
) -> None:
    (project / "wsapp.py").write_text(WS_APP)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app_server", "wsapp:app", "--port", str(port), *args],
        cwd=project,
        env=clean_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_answer(base + "/", process, deadline_s=30)
        assert _ws_echo_close_code(base, fits) == (None, fits + "|")
        assert _ws_echo_close_code(base, fits + "x") == (1009, "")
    finally:
        stop(process)
        process.communicate()


def test_websocket_compression_flag(project: Path) -> None:
    (project / "wsapp.py").write_text(WS_APP)
    with serving(project, "wsapp:app", "--ws-compression", "--ws-max-size", "100") as (base, p):
        code, detail = _ws_echo_close_code(base, "hello", extensions=True)
    p.communicate()
    assert code is None
    echoed, header = detail.split("|")
    assert echoed == "hello" and header.startswith("permessage-deflate")
