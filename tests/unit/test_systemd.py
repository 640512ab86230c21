"""master.systemd: the notify protocol and socket activation, over real sockets.

The notify tests bind the datagram socket systemd would own and read back
exactly what ``Notifier`` sent. The socket-activation tests run ``listen_fds``
in a child interpreter whose descriptors 3.. are real listeners (or wrong
ones) made here, because it adopts whatever sits at fd 3 and up.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from app_server.master.systemd import (
    Notifier,
    SystemdError,
    listen_fds,
    watchdog_interval,
)

ROOT = Path(__file__).resolve().parents[2]


# -- Notifier ----------------------------------------------------------------------


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """The service manager's end: a datagram socket bound to a path."""
    path = str(tmp_path / "notify")
    with closing(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)) as sock:
        sock.bind(path)
        sock.settimeout(5)
        yield sock, path


@pytest.fixture
def notifier(receiver: tuple[socket.socket, str]) -> Iterator[Notifier]:
    made = Notifier.from_environ({"NOTIFY_SOCKET": receiver[1]})
    assert made is not None
    with closing(made):
        yield made


class Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def error_log_records() -> Iterator[list[logging.LogRecord]]:
    """Records of ``app_server.error``, even when configure_logging stopped its
    propagation to the root logger (where caplog listens)."""
    handler = Collector()
    logger = logging.getLogger("app_server.error")
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)


def received(receiver: tuple[socket.socket, str]) -> bytes:
    return receiver[0].recv(4096)


def test_from_environ_consumes_notify_socket(receiver: tuple[socket.socket, str]) -> None:
    environ = {"NOTIFY_SOCKET": receiver[1], "PATH": "/usr/bin"}
    made = Notifier.from_environ(environ)
    assert made is not None
    made.close()
    assert environ == {"PATH": "/usr/bin"}


def test_no_notify_socket_means_no_notifier() -> None:
    environ = {"PATH": "/usr/bin"}
    assert Notifier.from_environ(environ) is None
    assert environ == {"PATH": "/usr/bin"}


def test_an_unusable_address_is_dropped_with_a_warning() -> None:
    environ = {"NOTIFY_SOCKET": "relative/notify"}
    with error_log_records() as records:
        assert Notifier.from_environ(environ) is None
    assert environ == {}
    assert [r.levelno for r in records] == [logging.WARNING]
    assert "relative/notify" in records[0].getMessage()


def test_the_socket_is_non_blocking_and_close_on_exec(notifier: Notifier) -> None:
    sock = notifier._sock
    assert sock.family == socket.AF_UNIX and sock.type == socket.SOCK_DGRAM
    assert sock.getblocking() is False
    assert sock.get_inheritable() is False


def test_ready(notifier: Notifier, receiver: tuple[socket.socket, str]) -> None:
    assert notifier.ready() is True
    assert received(receiver) == b"READY=1"
    assert notifier.ready("4 workers ready") is True
    assert received(receiver) == b"READY=1\nSTATUS=4 workers ready"


def test_reloading_carries_the_monotonic_clock_in_the_same_datagram(
    notifier: Notifier, receiver: tuple[socket.socket, str]
) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading("reloading 2 workers") is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = received(receiver).decode().split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert before <= int(lines[1].removeprefix("MONOTONIC_USEC=")) <= after
    assert lines[2:] == ["STATUS=reloading 2 workers"]


def test_reloading_without_status(notifier: Notifier, receiver: tuple[socket.socket, str]) -> None:
    notifier.reloading()
    assert [line.split("=")[0] for line in received(receiver).decode().split("\n")] == [
        "RELOADING",
        "MONOTONIC_USEC",
    ]


def test_stopping_status_and_watchdog(
    notifier: Notifier, receiver: tuple[socket.socket, str]
) -> None:
    assert notifier.stopping() is True
    assert received(receiver) == b"STOPPING=1"
    assert notifier.stopping("draining") is True
    assert received(receiver) == b"STOPPING=1\nSTATUS=draining"
    assert notifier.status("3 of 4 workers ready") is True
    assert received(receiver) == b"STATUS=3 of 4 workers ready"
    assert notifier.watchdog() is True
    assert received(receiver) == b"WATCHDOG=1"


def test_send_joins_assignments_into_one_datagram(
    notifier: Notifier, receiver: tuple[socket.socket, str]
) -> None:
    assert notifier.send("READY=1", "STATUS=up", "MAINPID=42") is True
    assert received(receiver) == b"READY=1\nSTATUS=up\nMAINPID=42"


def test_a_status_stays_on_one_line(
    notifier: Notifier, receiver: tuple[socket.socket, str]
) -> None:
    notifier.status("reload failed:\nImportError: no module named app")
    assert received(receiver) == b"STATUS=reload failed: ImportError: no module named app"


def test_abstract_socket_address() -> None:
    name = f"app-server-test-{uuid.uuid4().hex}"
    with closing(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        environ = {"NOTIFY_SOCKET": "@" + name}
        made = Notifier.from_environ(environ)
        assert made is not None and environ == {}
        with closing(made):
            assert made.ready() is True
        assert sock.recv(4096) == b"READY=1"


def test_a_vanished_socket_fails_quietly_and_warns_once(
    notifier: Notifier, receiver: tuple[socket.socket, str]
) -> None:
    receiver[0].close()
    os.unlink(receiver[1])
    with error_log_records() as records:
        assert notifier.ready() is False
        assert notifier.watchdog() is False
        assert notifier.status("still here") is False
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert receiver[1] in records[0].getMessage()


def test_send_after_close_returns_false(notifier: Notifier) -> None:
    notifier.close()
    notifier.close()
    with error_log_records():
        assert notifier.ready() is False


# -- watchdog_interval -----------------------------------------------------------


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    environ = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid()), "HOME": "/"}
    assert watchdog_interval(environ) == 15.0
    assert environ == {"HOME": "/"}


def test_watchdog_interval_without_watchdog_pid() -> None:
    environ = {"WATCHDOG_USEC": "500000"}
    assert watchdog_interval(environ) == 0.25
    assert environ == {}


def test_watchdog_for_another_process_is_not_ours() -> None:
    environ = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert watchdog_interval(environ) is None
    assert environ == {}


def test_watchdog_pid_can_be_given() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "77"}, pid=77) == 1.0


@pytest.mark.parametrize("environ", [{}, {"WATCHDOG_PID": "1"}, {"WATCHDOG_USEC": ""}])
def test_no_watchdog(environ: dict[str, str]) -> None:
    assert watchdog_interval(environ) is None
    assert environ == {}


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_a_malformed_watchdog_usec_turns_the_watchdog_off(value: str) -> None:
    environ = {"WATCHDOG_USEC": value}
    with error_log_records() as records:
        assert watchdog_interval(environ) is None
    assert environ == {}
    assert len(records) == 1 and repr(value) in records[0].getMessage()


# -- listen_fds, in this process (nothing is adopted) -------------------------------


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"},
        {"LISTEN_PID": "{pid}", "LISTEN_FDNAMES": "http"},
        {"LISTEN_PID": "{other}", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:admin"},
        {"LISTEN_PID": "{pid}", "LISTEN_FDS": "0"},
    ],
    ids=["unset", "no-pid", "no-count", "other-pid", "zero"],
)
def test_nothing_passed_to_this_process(environ: dict[str, str]) -> None:
    pid = os.getpid()
    filled = {k: v.format(pid=pid, other=pid + 1) for k, v in environ.items()}
    filled["PATH"] = "/usr/bin"
    assert listen_fds(filled, pid) == []
    assert filled == {"PATH": "/usr/bin"}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"LISTEN_PID": "self", "LISTEN_FDS": "1"}, "LISTEN_PID='self' is not"),
        ({"LISTEN_PID": "{pid}", "LISTEN_FDS": "two"}, "LISTEN_FDS='two' is not"),
        ({"LISTEN_PID": "{pid}", "LISTEN_FDS": "-1"}, "LISTEN_FDS='-1' is not"),
    ],
)
def test_malformed_variables_are_errors(environ: dict[str, str], message: str) -> None:
    filled = {k: v.format(pid=os.getpid()) for k, v in environ.items()}
    with pytest.raises(SystemdError) as caught:
        listen_fds(filled, os.getpid())
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert filled == {}


# -- listen_fds, in a child whose fds 3.. are real sockets -----------------------------

# Moves the descriptors named in argv[1] to 3, 4, ... (through high numbers
# first, so no move clobbers a descriptor still to be moved), sets LISTEN_PID
# to its own pid unless argv[2] gives one, calls listen_fds and prints what it
# found as JSON; then accepts one connection on each socket and answers it.
CHILD = r"""
import fcntl, json, os, socket, sys
from app_server.master.systemd import SystemdError, listen_fds

sources = [int(fd) for fd in sys.argv[1].split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in sources]
for fd in sources:
    os.close(fd)
for target, fd in enumerate(high, start=3):
    os.dup2(fd, target)
    os.close(fd)
os.environ["LISTEN_PID"] = sys.argv[2] or str(os.getpid())
try:
    found = listen_fds(os.environ, os.getpid())
except SystemdError as exc:
    still_open = [fd for fd in range(3, 3 + len(sources)) if os.fstat(fd)]
    print(json.dumps({"error": str(exc), "still_open": still_open}), flush=True)
    sys.exit(0)
left = sorted(k for k in os.environ if k.startswith("LISTEN_"))
print(json.dumps({"left": left, "sockets": [
    {"fd": s.fileno(), "name": n, "family": s.family.name, "type": s.type.name,
     "blocking": s.getblocking(), "inheritable": s.get_inheritable()}
    for s, n in found
]}), flush=True)
for sock, name in found:
    sock.settimeout(5)
    conn, _ = sock.accept()
    conn.sendall(name.encode())
    conn.close()
    sock.close()
"""


Report = dict[str, Any]


class Children:
    """Starts the child above; reaps every child and closes its pipe at teardown."""

    def __init__(self) -> None:
        self._started: list[subprocess.Popen[str]] = []

    def run(self, fds: list[int], environ: dict[str, str], listen_pid: str = "") -> Report:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        env.update(environ)
        env["PYTHONPATH"] = str(ROOT)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, ",".join(map(str, fds)), listen_pid],
            pass_fds=fds,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._started.append(child)
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line, f"the child printed nothing (exit status {child.wait(10)})"
        report: Report = json.loads(line)
        return report

    def wait_all(self) -> list[int]:
        """Exit statuses; a child that takes longer than 10 s is killed."""
        statuses = []
        for child in self._started:
            try:
                statuses.append(child.wait(10))
            except subprocess.TimeoutExpired:
                child.kill()
                statuses.append(child.wait())
            finally:
                assert child.stdout is not None
                child.stdout.close()
        self._started.clear()
        return statuses


@pytest.fixture
def children() -> Iterator[Children]:
    made = Children()
    yield made
    made.wait_all()


@pytest.fixture
def tcp_listener() -> Iterator[socket.socket]:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock


@pytest.fixture
def unix_listener(tmp_path: Path) -> Iterator[socket.socket]:
    with closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)) as sock:
        sock.bind(str(tmp_path / "http.sock"))
        sock.listen(8)
        yield sock


def connect(listener: socket.socket) -> socket.socket:
    """A client queued on the listener; the child accepts it from its copy."""
    client = socket.socket(listener.family, socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect(listener.getsockname())
    return client


def read_all(client: socket.socket) -> bytes:
    chunks = []
    while chunk := client.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_inherited_listeners_are_adopted_with_their_names(
    children: Children, tcp_listener: socket.socket, unix_listener: socket.socket
) -> None:
    clients = [connect(tcp_listener), connect(unix_listener)]
    report = children.run(
        [tcp_listener.fileno(), unix_listener.fileno()],
        {"LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:internal"},
    )
    assert report == {
        "left": [],
        "sockets": [
            {
                "fd": 3,
                "name": "http",
                "family": "AF_INET",
                "type": "SOCK_STREAM",
                "blocking": False,
                "inheritable": False,
            },
            {
                "fd": 4,
                "name": "internal",
                "family": "AF_UNIX",
                "type": "SOCK_STREAM",
                "blocking": False,
                "inheritable": False,
            },
        ],
    }
    for client, name in zip(clients, [b"http", b"internal"], strict=True):
        with closing(client):
            assert read_all(client) == name
    assert children.wait_all() == [0]


def test_missing_names_are_unknown(
    children: Children, tcp_listener: socket.socket, unix_listener: socket.socket
) -> None:
    clients = [connect(tcp_listener), connect(unix_listener)]
    report = children.run(
        [tcp_listener.fileno(), unix_listener.fileno()],
        {"LISTEN_FDS": "2", "LISTEN_FDNAMES": "http"},
    )
    assert [s["name"] for s in report["sockets"]] == ["http", "unknown"]
    for client in clients:
        with closing(client):
            read_all(client)
    assert children.wait_all() == [0]


def test_without_fdnames_every_socket_is_unknown(
    children: Children, tcp_listener: socket.socket
) -> None:
    with closing(connect(tcp_listener)) as client:
        report = children.run([tcp_listener.fileno()], {"LISTEN_FDS": "1"})
        assert [s["name"] for s in report["sockets"]] == ["unknown"]
        assert read_all(client) == b"unknown"
    assert children.wait_all() == [0]


def test_sockets_for_another_pid_are_left_alone(
    children: Children, tcp_listener: socket.socket
) -> None:
    # LISTEN_PID names this test process, the child's parent: the variables
    # were inherited, not meant for the child.
    report = children.run(
        [tcp_listener.fileno()],
        {"LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"},
        listen_pid=str(os.getpid()),
    )
    assert report == {"left": [], "sockets": []}
    assert children.wait_all() == [0]


def test_a_bound_but_not_listening_socket_is_an_error(
    children: Children, tcp_listener: socket.socket
) -> None:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as idle:
        idle.bind(("127.0.0.1", 0))
        report = children.run(
            [tcp_listener.fileno(), idle.fileno()],
            {"LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:admin"},
        )
    assert children.wait_all() == [0]
    assert report["error"] == (
        "systemd socket activation: file descriptor 4 (name 'admin') is a non-listening "
        "SOCK_STREAM socket; expected a listening SOCK_STREAM socket "
        "(ListenStream= in the .socket unit, Accept=no)"
    )
    assert report["still_open"] == [3, 4]


def test_a_datagram_socket_is_an_error(children: Children) -> None:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as udp:
        udp.bind(("127.0.0.1", 0))
        report = children.run([udp.fileno()], {"LISTEN_FDS": "1", "LISTEN_FDNAMES": "dns"})
    assert children.wait_all() == [0]
    assert "file descriptor 3 (name 'dns') is a non-listening SOCK_DGRAM socket" in report["error"]


def test_a_pipe_is_not_a_socket(children: Children) -> None:
    read_end, write_end = os.pipe()
    try:
        report = children.run([read_end], {"LISTEN_FDS": "1"})
    finally:
        os.close(read_end)
        os.close(write_end)
    assert children.wait_all() == [0]
    assert report["error"] == (
        "systemd socket activation: file descriptor 3 (name 'unknown') is not a socket "
        "(Socket operation on non-socket); use ListenStream= in the .socket unit"
    )


def test_more_fds_counted_than_passed(children: Children, tcp_listener: socket.socket) -> None:
    report = children.run([tcp_listener.fileno()], {"LISTEN_FDS": "2"})
    assert children.wait_all() == [0]
    assert "file descriptor 4 (name 'unknown') is not open" in report["error"]
    assert report["still_open"] == [3]
