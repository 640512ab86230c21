"""``app-server ctl``: ask a running master through its control socket.

Owns: the client's command line, finding the socket, one request and its
answer (``request``), and printing it (an aligned table, or ``--json``).

The socket is found as the master placed it, with the same precedence
(command line, environment, config file): ``--socket PATH``, else
``APP_SERVER_CONTROL_SOCKET``, else ``control_socket`` in the config file
(``--config FILE`` or ``APP_SERVER_CONFIG``), else
``$RUNTIME_DIRECTORY/app-server.sock`` (systemd's ``RuntimeDirectory=``, also
set for ``ExecReload=``), else beside the pid file (``--pid FILE``,
``APP_SERVER_PID`` or ``pid`` in the config file; ``/run/x.pid`` ->
``/run/x.ctl``).

Exit codes: 0 done; 1 the master answered with an error (a reload that
aborted, an unknown slot); 2 a usage error, or no master to talk to.

Rule: imports nothing from the package but ``master.ctl_server`` (its
framing and default path) and ``settings.sources`` (the config file);
never the framework or the workers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from app_server.master.ctl_server import (
    MAX_ANSWER,
    FrameError,
    FrameReader,
    default_path,
    encode_frame,
)
from app_server.settings.schema import SettingsError
from app_server.settings.sources import Sourced, read_config_file

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
CONNECT_TIMEOUT_S = 5.0
WAIT_TIMEOUT_S = 3600.0  # reload --wait: a rolling reload of many slow-draining workers
COLUMNS = (
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
)
HEADERS = ("PID", "SLOT", "STATE", "UPTIME", "REQUESTS", "HTTP", "WS", "RSS", "CPU", "HEARTBEAT")


class CtlError(Exception):
    """Nothing to talk to, or the master's answer cannot be read: one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"app-server ctl: {message}\n")


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    # SUPPRESS: given after the command, it must not reset what was given before it.
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the answer as JSON (for scripts)",
    )
    common.add_argument(
        "--socket", metavar="PATH", default=argparse.SUPPRESS, help="the master's control socket"
    )
    common.add_argument(
        "--pid",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="the master's pid file: the socket is beside it",
    )
    common.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="the master's config file (its control_socket or pid)",
    )
    parser = _Parser(
        prog="app-server ctl", parents=[common], description="Control a running app-server master."
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    commands.add_parser("status", parents=[common], help="every worker and what it does")
    reload = commands.add_parser(
        "reload", parents=[common], help="rolling reload (the config file is read again)"
    )
    reload.add_argument(
        "--wait",
        action="store_true",
        help="return when every old worker has exited; non-zero if aborted",
    )
    scale = commands.add_parser("scale", parents=[common], help="run N workers")
    scale.add_argument("workers", type=int, metavar="N")
    commands.add_parser("add", parents=[common], help="one worker more")
    commands.add_parser("remove", parents=[common], help="one worker fewer")
    drain = commands.add_parser(
        "drain", parents=[common], help="replace one slot's worker (its successor starts first)"
    )
    drain.add_argument("slot", type=int, metavar="SLOT")
    commands.add_parser("reopen-logs", parents=[common], help="reopen the log files (as USR1)")
    stop = commands.add_parser("stop", parents=[common], help="graceful shutdown")
    stop.add_argument("--now", action="store_true", help="immediate shutdown (as QUIT)")
    return parser


def socket_path(
    given: str | None, pid: str | None, environ: Mapping[str, str], config: str | None = None
) -> str | None:
    """Where the master put its socket (see the module's docstring).

    Raises ``SettingsError`` for a config file that cannot be read.
    """
    config = config or environ.get("APP_SERVER_CONFIG") or None
    file = read_config_file(Sourced(config, "--config")) if config else {}

    def pick(flag: str | None, env: str, key: str) -> str | None:
        for value in (flag, environ.get(env), file[key].value if key in file else None):
            if isinstance(value, str) and value:
                return value
        return None

    explicit = pick(given, "APP_SERVER_CONTROL_SOCKET", "control_socket")
    if explicit is not None:
        return None if explicit == "off" else explicit
    return default_path(environ, pick(pid, "APP_SERVER_PID", "pid"))


def request(path: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send one request, read its one answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect(path)
        except OSError as exc:
            raise CtlError(
                f"cannot connect to the control socket {path}: {exc.strerror} "
                "(is the server running? --socket PATH)"
            ) from exc
        sock.settimeout(timeout)
        reader = FrameReader(MAX_ANSWER)
        try:
            with contextlib.suppress(BrokenPipeError):  # refused: its answer is still there
                sock.sendall(encode_frame(message))
            while True:
                answer = reader.next()
                if answer is not None:
                    return answer
                data = sock.recv(65536)
                if not data:
                    raise CtlError("the master closed the connection without an answer")
                reader.feed(data)
        except FrameError as exc:
            raise CtlError(f"unreadable answer: {exc}") from exc
        except TimeoutError as exc:
            raise CtlError(f"no answer within {timeout:.0f}s") from exc
        except OSError as exc:
            raise CtlError(f"control socket {path}: {exc.strerror}") from exc


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        path = socket_path(
            getattr(args, "socket", None),
            getattr(args, "pid", None),
            os.environ,
            getattr(args, "config", None),
        )
    except SettingsError as exc:
        print(f"app-server ctl: {str(exc).removeprefix('app-server: ')}", file=sys.stderr)
        return EXIT_USAGE
    if path is None:
        print(
            "app-server ctl: no control socket: give --socket PATH (or --config FILE, "
            "--pid FILE, or set APP_SERVER_CONTROL_SOCKET or RUNTIME_DIRECTORY)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    message: dict[str, Any] = {"command": args.command}
    timeout = CONNECT_TIMEOUT_S * 2
    if args.command == "reload":
        message["wait"] = args.wait
        timeout = WAIT_TIMEOUT_S if args.wait else timeout
    elif args.command == "scale":
        message["workers"] = args.workers
    elif args.command == "drain":
        message["slot"] = args.slot
    elif args.command == "stop":
        message["now"] = args.now
    try:
        answer = request(path, message, timeout)
    except CtlError as exc:
        print(f"app-server ctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    ok = answer.pop("ok", False) is True
    as_json = getattr(args, "json", False)
    if not ok:
        error = str(answer.get("error", "failed"))
        if as_json:
            print(json.dumps({"error": error}))
        print(f"app-server ctl: {error}", file=sys.stderr)
        return EXIT_FAILED
    if as_json:
        print(json.dumps(answer, indent=2 if args.command == "status" else None))
    else:
        print(render(args.command, answer))
    return EXIT_OK


def render(command: str, answer: dict[str, Any]) -> str:
    """The human form of an answer: ``status`` as an aligned table, the rest one line."""
    if command != "status":
        if command == "reload" and "replaced" in answer:
            return (
                f"reloaded: {answer['replaced']} workers replaced in {answer['took_s']}s, "
                "the old ones have exited"
            )
        details = ", ".join(f"{k} {v}" for k, v in answer.items())
        return f"{command}: ok" + (f" ({details})" if details else "")
    master = answer.get("master", {})
    lines = [
        f"master {master.get('pid')}: {master.get('state')}, {master.get('workers')} "
        f"workers, up {_duration(master.get('uptime_s', 0))}"
        + (f", {master['operation']} in progress" if master.get("operation") else "")
    ]
    rows = [HEADERS] + [
        tuple(_cell(key, w.get(key)) for key in COLUMNS) for w in answer.get("workers", [])
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    for row in rows:
        # Text left, numbers right, so that digits line up.
        lines.append(
            "  ".join(
                cell.ljust(width) if i == 2 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    return "\n".join(lines)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "rss_bytes":
        return f"{value / 1048576:.1f}M"
    if key == "uptime_s":
        return _duration(value)
    if key in ("cpu_s", "heartbeat_age_s"):
        return f"{value:.2f}s"
    return str(value)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
