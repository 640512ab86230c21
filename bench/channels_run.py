#!/usr/bin/env python3
"""Channels benchmark: one topic, 1000 subscribers over 2 workers, one publisher.

    python bench/channels_run.py --rounds 3 --duration 5 [--backends local,redis,master]

For each backend, app-server runs bench/apps/channels_app_server.py with
``--workers 2 --channels <backend>`` (``local``: the ceiling, one worker with
bench/apps/ws_app_server.py's process-local ``app.broadcast``, the same
stream to the same clients). 1000 connections subscribe to the topic
(the kernel spreads them over the workers); connection 0 is the publisher:
every message it sends is published and reaches all 1000, itself included.
bench/ws_load.py's ``chan`` mode measures, on the same connections:

* ``w1``  delivered messages/s with one broadcast in flight (the next is sent
  when the previous one has reached all 1000), as the Django Channels anchor
  of issue 11 was measured;
* ``w32`` the same with 32 broadcasts in flight;
* ``half`` publish -> delivery latency (p50/p99 over every delivery at every
  connection) with the publisher sending open-loop at half the ``w32`` rate
  of the same round.

The servers and Redis run pinned to core 0 (bench/run.py's SERVER_CPU), the
load generator to core 1. Rounds are interleaved (every backend once per
round) so that other load on this shared machine hits all alike; the table
shows medians and the load average of the run. ``--mem`` adds the RSS that
10,000 subscriptions over 100 topics (100 connections x 100 topics) add to
one worker. A backend that the server refuses (``master`` before it exists)
is reported as such. Only 127.0.0.1 is targeted; every process started here
is stopped by PID in a ``finally``. Raw results: bench/out/channels-<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402  (bench/run.py)
import ws_load  # noqa: E402  (bench/ws_load.py: frames for the memory probe)

BENCH_DIR = bench.BENCH_DIR
OUT_DIR = bench.OUT_DIR
HOST = bench.HOST
SERVER_CPU = bench.SERVER_CPU
LOAD_CPU = bench.WRK_CPU
LOAD = BENCH_DIR / "ws_load.py"
BenchError = bench.BenchError
SUBSCRIBERS = 1000
MEM_CONNECTIONS = 100
MEM_TOPICS = 100
# The anchors: peers on Uvicorn with 2 workers, run by --peer-python.
ANCHORS = {
    "django": "bench.apps.channels_django:application",
    "socketio": "bench.apps.channels_socketio:app",
}
BACKENDS = ["local", "redis", "master", *ANCHORS]
DJANGO_ANCHOR = 5092.0  # delivered msgs/s, issue 11 (Django Channels + channels_redis, 2 workers)


class Redis:
    """redis-server pinned to the server core, in a temporary directory, stopped by PID."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError("redis-server is not installed (tests/channels/setup.sh)")
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.port = bench.free_port()
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, binary, "--port", str(self.port), "--bind", HOST,
             "--dir", self.dir, "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--protected-mode", "no", "--logfile", str(Path(self.dir) / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BenchError("redis-server did not answer within 10 s")

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def flush(self) -> None:
        with socket.create_connection((HOST, self.port), timeout=2) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            sock.recv(16)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class ChannelServer(bench.ServerProcess):
    """app-server with one backend (bench/run.py's start, readiness poll and stop by PID)."""

    def __init__(self, backend: str, port: int, log_path: Path, redis: Redis | None,
                 workers: int = 2, peer_python: str = "") -> None:
        self.name = backend
        self.port = port
        self.log_path = log_path
        common = [bench._bin("app-server"), "--host", HOST, "--port", str(port),
                  "--no-access-log", "--log-level", "warning", "--metrics-bind", f"{HOST}:0",
                  "--ws-ping-interval", "off"]
        if backend in ANCHORS:
            if not peer_python:
                raise BenchError(f"{backend} needs --peer-python (see bench/README.md)")
            cmd = [peer_python, "-m", "uvicorn", ANCHORS[backend], "--host", HOST,
                   "--port", str(port), "--workers", str(workers), "--loop", "uvloop",
                   "--http", "httptools", "--log-level", "warning", "--no-access-log"]
        elif backend == "local":  # the ceiling: one worker, app.broadcast
            cmd = [*common, "--workers", "1", "bench.apps.ws_app_server:app"]
        else:
            url = redis.url if backend == "redis" and redis is not None else backend
            cmd = [*common, "--workers", str(workers), "--channels", url,
                   "bench.apps.channels_app_server:app"]
        self.cmd = ["taskset", "-c", SERVER_CPU, *cmd]
        self.proc = None
        self.known_pids = {}

    def workers(self) -> list[int]:
        return list(bench._children_of(self.proc.pid)) if self.proc else []

    def tree(self) -> list[int]:
        return [self.proc.pid, *self.workers()] if self.proc else []


def run_load(port: int, extra: list[str], timeout: float) -> dict[str, Any]:
    cmd = ["taskset", "-c", LOAD_CPU, sys.executable, str(LOAD), "chan", "--port", str(port),
           *extra]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"ws_load chan did not finish within {timeout:g}s") from exc
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = " / ".join(proc.stderr.strip().splitlines()[-2:])
        raise BenchError(f"ws_load chan exited {proc.returncode}: {tail[:300]}") from None
    if proc.returncode != 0 or "error" in result:
        raise BenchError(str(result.get("error", f"exit {proc.returncode}")))
    return result


def measure(server: ChannelServer, args: argparse.Namespace, kind: str,
            rate: float = 0.0) -> dict[str, Any]:
    extra = ["--connections", str(SUBSCRIBERS), "--duration", str(args.duration),
             "--warmup", str(args.warmup), "--server-pids", ",".join(map(str, server.tree())),
             "--max-seconds", str(args.duration + args.warmup + 120)]
    if server.name != "local":
        extra += ["--count-path", "/count"]
    if server.name == "socketio":
        extra += ["--framing", "socketio"]
    if kind == "half":
        extra += ["--rate", f"{rate:.2f}"]
    else:
        extra += ["--window", kind.removeprefix("w")]
    with bench.CpuWatch(server) as watch:
        result = run_load(server.port, extra, args.duration + args.warmup + 180)
    result["foreign_cores"] = round(watch.foreign_cores, 3)
    return result


def ws_client(port: int, path: str) -> socket.socket:
    """A blocking WebSocket client socket, upgraded."""
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        part = sock.recv(1)
        if not part:
            raise BenchError("closed during the handshake")
        head += part
    if not head.startswith(b"HTTP/1.1 101"):
        raise BenchError(f"handshake refused: {head[:40]!r}")
    return sock


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for {pid}")


def measure_memory(backend: str, redis: Redis | None, log_dir: Path) -> dict[str, Any]:
    """RSS a worker gains from 10,000 subscriptions over 100 topics (connections open before)."""
    server = ChannelServer(backend, bench.free_port(), log_dir / f"mem-{backend}.log", redis,
                           workers=1)
    server.start()
    socks: list[socket.socket] = []
    try:
        [worker] = server.workers()
        for _ in range(MEM_CONNECTIONS):
            socks.append(ws_client(server.port, "/multi"))
        time.sleep(1.0)  # let the worker settle after the handshakes (not a sync point)
        before = rss_kib(worker)
        for sock in socks:
            sock.sendall(ws_load.client_frame(1, f"subscribe {MEM_TOPICS}".encode()))
        for sock in socks:
            buf = b""
            while True:
                frames, buf = ws_load.parse_frames(buf + sock.recv(4096))
                if frames:
                    if frames[0][2] != f"ok {MEM_TOPICS}".encode():
                        raise BenchError(f"/multi answered {frames[0][2][:40]!r}")
                    break
        after = rss_kib(worker)
        return {"subscriptions": MEM_CONNECTIONS * MEM_TOPICS, "topics": MEM_TOPICS,
                "rss_before_kib": before, "rss_after_kib": after,
                "growth_mib": round((after - before) / 1024, 2)}
    finally:
        for sock in socks:
            sock.close()
        server.stop()


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated: local (ceiling), redis, master, django, socketio")
    parser.add_argument("--peer-python", default=os.environ.get("BENCH_PEER_PYTHON", ""),
                        help="the Python of the virtualenv with bench/requirements-channels.txt")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--mem", action="store_true", help="also measure subscription memory")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}")
    ws_load.raise_nofile(SUBSCRIBERS + 256)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = OUT_DIR / f"channels-{stamp}"
    log_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
    refused: dict[str, str] = {}
    memory: dict[str, dict[str, Any]] = {}
    loads = [load_average()]
    redis = Redis() if set(backends) & {"redis", *ANCHORS} else None
    if redis is not None:
        os.environ["BENCH_REDIS_URL"] = redis.url  # the anchors' apps read it
    try:
        for rnd in range(1, args.rounds + 1):
            for backend in backends:
                if backend in refused:
                    continue
                if redis is not None:
                    redis.flush()
                server = ChannelServer(backend, bench.free_port(),
                                       log_dir / f"{backend}-{rnd}.log", redis,
                                       peer_python=args.peer_python)
                try:
                    server.start()
                except BenchError as exc:
                    refused[backend] = str(exc)
                    print(f"{backend}: not available: {exc}", file=sys.stderr, flush=True)
                    continue
                try:
                    row: dict[str, Any] = {"round": rnd, "workers": len(server.workers())}
                    for kind in ("w1", "w32"):
                        r = measure(server, args, kind)
                        row[kind] = r
                    half = row["w32"]["broadcasts_per_s"] / 2
                    row["half"] = measure(server, args, "half", half)
                    row["load_average"] = load_average()
                    results[backend].append(row)
                    print(f"round {rnd} {backend}: w1 {row['w1']['rate']:.0f} msg/s "
                          f"(p50 {row['w1']['p50_fanout_ms']:.1f} ms per broadcast), "
                          f"w32 {row['w32']['rate']:.0f} msg/s, at {half:.0f} bcast/s "
                          f"p50 {row['half']['p50_ms']:.2f} ms p99 {row['half']['p99_ms']:.2f} ms"
                          f" (load {row['load_average']})", file=sys.stderr, flush=True)
                finally:
                    server.stop()
        if args.mem:
            for backend in backends:
                if backend in ("redis", "master") and backend not in refused:
                    if redis is not None:
                        redis.flush()
                    memory[backend] = measure_memory(backend, redis, log_dir)
                    print(f"memory {backend}: {memory[backend]}", file=sys.stderr, flush=True)
    finally:
        bench.stop_all()
        if redis is not None:
            redis.stop()
    loads.append(load_average())

    table = summarise(backends, results, refused, memory, loads, args)
    print(table)
    raw = {"stamp": stamp, "args": vars(args), "results": results, "refused": refused,
           "memory": memory, "load_average": loads, "table": table}
    out = OUT_DIR / f"channels-{stamp}.json"
    out.write_text(json.dumps(raw, indent=1))
    (OUT_DIR / "channels-latest.json").write_text(json.dumps(raw, indent=1))
    return 0


def summarise(backends: list[str], results: dict[str, list[dict[str, Any]]],
              refused: dict[str, str], memory: dict[str, dict[str, Any]], loads: list[str],
              args: argparse.Namespace) -> str:
    """The Markdown table of medians, with the ratios the targets are stated in."""

    def col(rows: list[dict[str, Any]], kind: str, key: str) -> float | None:
        return median([r[kind] for r in rows], key)

    def fmt(value: float | None, spec: str, unit: str = "") -> str:
        return "" if value is None else f"{value:{spec}}{unit}"

    ceiling = col(results["local"], "w1", "rate") if results.get("local") else None
    django = col(results["django"], "w1", "rate") if results.get("django") else None
    anchor, anchor_note = (django, "this run") if django else (DJANGO_ANCHOR, "issue 11")
    lines = [
        f"{SUBSCRIBERS} subscribers of one topic, 1 publisher, 2 workers (local: 1 worker, "
        f"app.broadcast); medians of {args.rounds} interleaved rounds of {args.duration:g} s; "
        f"load average (1/5/15 min) at start / end: {loads[0]} / {loads[-1]}",
        "",
        "| backend | w1 delivered msg/s | w1 p50 per broadcast | w32 delivered msg/s "
        "| half-load rate (bcast/s) | p50 | p99 | w1 vs local w1 "
        f"| w1 vs Django Channels w1 ({anchor_note}) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for backend in backends:
        rows = results.get(backend, [])
        if not rows:
            reason = refused.get(backend, "no result").replace("|", "/")[:100]
            lines.append(f"| {backend} | not available: {reason} | | | | | | | |")
            continue
        w1 = col(rows, "w1", "rate")
        lines.append(
            f"| {backend} | {fmt(w1, ',.0f')} "
            f"| {fmt(col(rows, 'w1', 'p50_fanout_ms'), '.2f', ' ms')} "
            f"| {fmt(col(rows, 'w32', 'rate'), ',.0f')} "
            f"| {fmt(col(rows, 'half', 'target_rate'), ',.0f')} "
            f"| {fmt(col(rows, 'half', 'p50_ms'), '.2f', ' ms')} "
            f"| {fmt(col(rows, 'half', 'p99_ms'), '.2f', ' ms')} "
            f"| {fmt(w1 / ceiling if w1 and ceiling else None, '.2f')} "
            f"| {fmt(w1 / anchor if w1 else None, '.1f', 'x')} |"
        )
    for backend, mem in memory.items():
        lines.append(f"\n{backend}: {mem['subscriptions']:,} subscriptions over {mem['topics']} "
                     f"topics add {mem['growth_mib']:.2f} MiB to the worker's RSS")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
