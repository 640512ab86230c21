"""Two HTTP servers measured at the same time on the same core: CPU per request.

On a shared VM, sequential runs of one server vary by ±25 %, which hides
the differences ``run.py`` is meant to show. Here both servers (any two names
from ``run.py``'s table, e.g. ``app_server`` and ``uvicorn_raw``) run pinned to
core 0 at once, each loaded by its own wrk on core 1 for ``--duration``
seconds per round, so they share whatever the machine does. Each round
records each server's CPU time per request (utime + stime of the server and
its children from /proc, over the window, divided by the requests its wrk
completed). The ratio of CPU per request is the ratio of the throughput each
would reach alone on a core, and it is reported as "B / A".

    /work/bench-venv/bin/python bench/side_by_side.py app_server uvicorn_raw --path /

Loopback only; servers stopped by PID.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run as bench  # noqa: E402  (the server table and process handling)
from bench.metrics_overhead import (  # noqa: E402
    cpu_seconds,
    launch_pinned,
    requests_of,
    side_by_side_round,
    stop_server,
    wrk,
)

HOST = "127.0.0.1"


def tree_cpu(pid: int) -> float:
    total = cpu_seconds(pid)
    for child in bench._children_of(pid):
        try:
            total += cpu_seconds(child)
        except OSError:
            continue
    return total


def start(name: str) -> tuple[subprocess.Popen[bytes], int]:
    return launch_pinned(bench.SERVERS[name])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--path", default="/")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=int, default=4)
    args = parser.parse_args()
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    ratios = []
    try:
        for name in (args.a, args.b):
            servers[name] = start(name)
        cpu_of = {name: partial(tree_cpu, server.pid) for name, (server, _) in servers.items()}
        ports = {name: port for name, (_, port) in servers.items()}
        for port in ports.values():  # warm-up
            requests_of(wrk(port, 1, args.path))
        for index in range(args.rounds):
            us, _ = side_by_side_round(cpu_of, ports, args.duration, args.path)
            ratio = us[args.b] / us[args.a]
            ratios.append(ratio)
            print(f"round {index + 1}: {args.a} {us[args.a]:6.2f} µs CPU/request, "
                  f"{args.b} {us[args.b]:6.2f} µs CPU/request; {args.a} is {ratio:.2f}× "
                  f"as efficient", flush=True)
    finally:
        for server, _ in servers.values():
            stop_server(server)
    print(f"\nmedian: {args.a} serves {statistics.median(ratios):.2f}× the requests of "
          f"{args.b} per CPU second (path {args.path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
