"""The cost of metrics on the hot path: app-server with and without them.

Runs two ``app-server`` processes at the same time on the same core (0), one
as is and one with ``--metrics-bind off`` (which turns recording off), and
loads both at once with wrk (core 1, 32 connections each) for ``--duration``
seconds per round. Measuring them side by side, rather than one after the
other, makes them share whatever the machine is doing (frequency, other
tenants), which on a shared VM moves throughput by ±25 % from one run to the
next. Each round records each worker's CPU time per request (utime + stime
from /proc over the window, divided by the requests wrk completed); the
result is the median of the per-round on/off ratios.

    /work/bench-venv/bin/python bench/metrics_overhead.py --rounds 10 --duration 4

Loopback only; every server is stopped by PID.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def worker_of(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"expected one worker, found {children}")
    return int(children[0])


def start_server(metrics: bool) -> tuple[subprocess.Popen[bytes], int]:
    def command(port: int) -> list[str]:
        return [
            str(Path(sys.executable).parent / "app-server"),
            "--host", HOST, "--port", str(port), "--no-access-log", "--log-level", "warning",
            "--metrics-bind", f"{HOST}:{free_port()}" if metrics else "off",
            "bench.apps.app_server_app:app",
        ]
    return launch_pinned(command)


def launch_pinned(command: Callable[[int], list[str]]) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``command(port)`` on core 0; return it once it answers on ``/``."""
    port = free_port()
    server = subprocess.Popen(["taskset", "-c", "0", *command(port)], cwd=ROOT,
                              stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=1).read()
            return server, port
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                stop_server(server)
                raise RuntimeError(f"did not start: {command(port)}") from None
            time.sleep(0.05)


def stop_server(server: subprocess.Popen[Any]) -> None:
    """TERM by PID, KILL if it does not exit within 30 s."""
    if server.poll() is None:
        os.kill(server.pid, signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        os.kill(server.pid, signal.SIGKILL)
        server.wait()


def wrk(port: int, seconds: int, path: str = "/") -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{seconds}s",
         f"http://{HOST}:{port}{path}"],
        stdout=subprocess.PIPE, text=True,
    )


def requests_of(process: subprocess.Popen[str]) -> int:
    out, _ = process.communicate(timeout=120)
    return int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]


def side_by_side_round(
    cpu_of: dict[str, Callable[[], float]], ports: dict[str, int], seconds: int, path: str = "/"
) -> tuple[dict[str, float], dict[str, int]]:
    """Load every server at once for ``seconds``: (µs of CPU per request, requests) by name."""
    before = {name: cpu() for name, cpu in cpu_of.items()}
    loads = {name: wrk(port, seconds, path) for name, port in ports.items()}
    done = {name: requests_of(load) for name, load in loads.items()}
    us = {name: (cpu_of[name]() - before[name]) / done[name] * 1e6 for name in done}
    return us, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--duration", type=int, default=4)
    args = parser.parse_args()
    servers = {}
    try:
        servers["on"] = start_server(True)
        servers["off"] = start_server(False)
        workers = {name: worker_of(server.pid) for name, (server, _) in servers.items()}
        cpu_of = {name: partial(cpu_seconds, pid) for name, pid in workers.items()}
        ports = {name: port for name, (_, port) in servers.items()}
        for port in ports.values():  # warm-up
            requests_of(wrk(port, 1))
        ratios, costs = [], []
        for index in range(args.rounds):
            us, done = side_by_side_round(cpu_of, ports, args.duration)
            ratio = us["on"] / us["off"]
            ratios.append(ratio)
            costs.append(us["on"] - us["off"])
            print(f"round {index + 1}: on {done['on']:7d} requests {us['on']:6.2f} µs CPU each, "
                  f"off {done['off']:7d} requests {us['off']:6.2f} µs CPU each; "
                  f"on/off CPU per request {ratio:.3f}", flush=True)
    finally:
        for server, _ in servers.values():
            stop_server(server)
    ratio = statistics.median(ratios)
    print(f"\nmedian CPU per request on/off: {ratio:.3f} ({(ratio - 1) * 100:+.1f} %), "
          f"i.e. {statistics.median(costs):+.2f} µs per request; the same CPU spent on "
          f"requests serves {(1 / ratio - 1) * 100:+.1f} % requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
