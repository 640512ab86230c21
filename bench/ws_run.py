#!/usr/bin/env python3
"""WebSocket benchmark: app-server against peer servers, in one run, as ratios.

Run it with the Python of the benchmark virtualenv (the one that has uvicorn,
sanic, aiohttp, wsproto, websockets and app-server installed), from anywhere:

    /work/bench-venv/bin/python bench/ws_run.py --rounds 3 --duration 5

Every server runs as one process (app-server: one worker) pinned to core 0;
the load generator bench/ws_load.py runs pinned to core 1. Scenarios: ws_echo
(64 connections, 64-byte text echo loop: round trips/s, p99), ws_bcast (1000
connections, fan-out of a message to all: delivered messages/s), ws_idle_mem
(2000 idle connections: server RSS growth per connection). Each round starts a
fresh server for every (server, scenario), checks that echo and broadcast are
correct, then measures; the table shows medians over the rounds. ``ws_bare``
(a framework-less uvloop server) is the ceiling reference that shows the load
generator is not the bottleneck. Only 127.0.0.1 is ever targeted; every load
is bounded in time; every process started here is stopped by PID in a
``finally``.

It reuses bench/run.py's machinery (server start/stop by PID, readiness
polling, quiet-core checks). Raw results go to bench/out/ws-results-<stamp>.json
(and bench/out/ws-latest.json). See bench/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402  (bench/run.py)

BENCH_DIR = bench.BENCH_DIR
REPO_ROOT = bench.REPO_ROOT
OUT_DIR = bench.OUT_DIR
HOST = bench.HOST
SERVER_CPU = bench.SERVER_CPU
LOAD_CPU = bench.WRK_CPU
LOAD = BENCH_DIR / "ws_load.py"
BASELINE = "uvicorn_wsproto"
BenchError = bench.BenchError

# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------


def _cmd_app_server(port: int) -> list[str]:
    # One worker (plus the master, whose RSS is counted too), metrics on as
    # by default, on a port the OS picks so that runs cannot collide.
    return [
        bench._bin("app-server"), "--host", HOST, "--port", str(port), "--workers", "1",
        "--no-access-log", "--log-level", "warning", "--metrics-bind", f"{HOST}:0",
        "bench.apps.ws_app_server:app",
    ]


def _cmd_app_server_asgi(port: int) -> list[str]:
    # app-server hosting the raw ASGI app uvicorn serves (issue 13): same
    # worker, wsproto stack and limits as native apps, through the ASGI adapter.
    return [
        bench._bin("app-server"), "--host", HOST, "--port", str(port), "--workers", "1",
        "--interface", "asgi", "--no-access-log", "--log-level", "warning",
        "--metrics-bind", f"{HOST}:0", "bench.apps.ws_asgi_raw:app",
    ]


def _cmd_uvicorn(ws: str | None):
    def cmd(port: int) -> list[str]:
        out = [
            bench._bin("uvicorn"), "bench.apps.ws_asgi_raw:app", "--host", HOST,
            "--port", str(port), "--http", "httptools", "--loop", "uvloop",
            "--no-access-log", "--log-level", "warning",
        ]
        return out + (["--ws", ws] if ws else [])
    return cmd


def _cmd_sanic(port: int) -> list[str]:
    return [
        bench._bin("sanic"), "bench.apps.ws_sanic:app", "--host", HOST, "--port", str(port),
        "--single-process", "--no-access-logs", "--no-motd",
    ]


def _cmd_aiohttp(port: int) -> list[str]:
    return [sys.executable, str(BENCH_DIR / "apps" / "ws_aiohttp.py"),
            "--host", HOST, "--port", str(port)]


def _cmd_bare(port: int) -> list[str]:
    return [sys.executable, str(BENCH_DIR / "apps" / "ws_bare.py"),
            "--host", HOST, "--port", str(port)]


SERVERS: dict[str, Any] = {
    "app_server": _cmd_app_server,
    # uvicorn's default --ws (auto): websockets' sans-I/O implementation
    # ("websockets-sansio") since uvicorn 0.35 when websockets is installed.
    "uvicorn_ws": _cmd_uvicorn(None),
    "uvicorn_wsproto": _cmd_uvicorn("wsproto"),
    "sanic": _cmd_sanic,
    "aiohttp": _cmd_aiohttp,
    # Not a peer: the ceiling reference (a framework-less uvloop protocol).
    "ws_bare": _cmd_bare,
    # Not run by default: app-server serving bench/apps/ws_asgi_raw.py over ASGI
    # (`--servers app_server_asgi,uvicorn_wsproto`).
    "app_server_asgi": _cmd_app_server_asgi,
}
PEERS = ["uvicorn_ws", "uvicorn_wsproto", "sanic", "aiohttp"]
REFERENCE = "ws_bare"
DEFAULT_SERVERS = ["app_server", *PEERS, REFERENCE]


class WsServer(bench.ServerProcess):
    """bench/run.py's ServerProcess (start, readiness poll on GET /, stop by PID
    with its children) with this benchmark's server commands."""

    def __init__(self, name: str, port: int, log_path: Path) -> None:
        self.name = name
        self.port = port
        self.log_path = log_path
        self.cmd = ["taskset", "-c", SERVER_CPU, *SERVERS[name](port)]
        self.proc = None
        self.known_pids = {}

    def tree(self) -> list[int]:
        """The server's PID and its live descendants' (e.g. app-server's worker)."""
        if self.proc is None:
            return []
        kids = bench._children_of(self.proc.pid)
        self.known_pids.update(kids)
        return [self.proc.pid, *kids]

    def rss_kib(self) -> int:
        """VmRSS of the server and all its descendants, in KiB."""
        total = 0
        for pid in self.tree():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
                            break
            except OSError:
                continue
        if not total:
            raise BenchError("could not read the server's RSS")
        return total

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = self.proc.returncode if self.proc else None
            raise BenchError(f"server died (exit {code}): {self._log_tail()}")


# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    metric: str  # key of the main result
    unit: str
    higher_is_better: bool
    latency: str | None  # key of the latency shown next to it
    what: str


SCENARIOS: dict[str, Scenario] = {
    "ws_echo": Scenario("ws_echo", "rate", "round trips/s", True, "p99_ms",
                        "connections × 64-byte text echo loop"),
    "ws_bcast": Scenario("ws_bcast", "rate", "delivered msg/s", True, "p99_fanout_ms",
                         "connections on /bcast, each message fanned out to all"),
    "ws_idle_mem": Scenario("ws_idle_mem", "kib_per_conn", "KiB/connection", False, None,
                            "idle connections, server RSS growth"),
}


def load_cmd(mode: str, port: int, *extra: str) -> list[str]:
    return ["taskset", "-c", LOAD_CPU, sys.executable, str(LOAD), mode, "--port", str(port),
            *extra]


def run_load(mode: str, port: int, extra: list[str], timeout: float) -> dict[str, Any]:
    """Run ws_load.py to completion; its last stdout line is the JSON result."""
    cmd = load_cmd(mode, port, *extra)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"ws_load {mode} did not finish within {timeout:g}s") from exc
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = " / ".join(proc.stderr.strip().splitlines()[-2:])
        raise BenchError(f"ws_load {mode} exited {proc.returncode} without a result: "
                         f"{tail[:300]}") from None
    if proc.returncode != 0 or "error" in result:
        raise BenchError(str(result.get("error", f"ws_load {mode} exited {proc.returncode}")))
    result["cmd"] = " ".join(cmd)
    return result


def verify(server: WsServer) -> None:
    """Echo comes back identical (64 B, 300 B non-ASCII, 70 kB) and a broadcast
    from two different connections reaches all of 20; raises BenchError."""
    try:
        run_load("check", server.port, [], timeout=60)
    except BenchError as exc:
        raise BenchError(f"wrong WebSocket behaviour: {exc}") from None


def _load_args(sc: Scenario, args: argparse.Namespace, server: WsServer,
               duration: float, warmup: float) -> list[str]:
    conns = args.echo_connections if sc.name == "ws_echo" else args.bcast_connections
    out = ["--connections", str(conns), "--duration", str(duration), "--warmup", str(warmup),
           "--server-pids", ",".join(map(str, server.tree())),
           "--max-seconds", str(duration + warmup + 120)]
    if sc.name == "ws_bcast":
        out += ["--window", str(args.window), "--nap-us", str(args.nap_us)]
    return out


def measure_rate(server: WsServer, sc: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    """One measured ws_load run (after its own warm-up on the same connections);
    if other processes used the cores meanwhile, wait for quiet and measure
    again (at most --retries times), keeping the run with the least foreign CPU."""
    mode = "echo" if sc.name == "ws_echo" else "bcast"
    best: dict[str, Any] | None = None
    for attempt in range(args.retries + 1):
        quiet_before = bench.wait_quiet(server, args.quiet_wait)
        with bench.CpuWatch(server) as watch:
            result = run_load(mode, server.port,
                              _load_args(sc, args, server, args.duration, args.warmup),
                              timeout=args.duration + args.warmup + 180)
        result.update(
            foreign_cores=round(watch.foreign_cores, 3),
            busy_cores=round(watch.busy_cores, 3),
            steal_cores=round(watch.steal_cores, 3),
            foreign_cores_before=round(quiet_before, 3),
            attempt=attempt + 1,
        )
        result["noisy"] = watch.foreign_cores >= bench.NOISE_LIMIT
        if best is None or result["foreign_cores"] < best["foreign_cores"]:
            best = result
        if not result["noisy"]:
            break
        print(f"   ({server.name} {sc.name}: others used {watch.foreign_cores:.2f} cores "
              f"during the run; attempt {attempt + 1}/{args.retries + 1})",
              file=sys.stderr, flush=True)
    assert best is not None
    return best


class LineReader:
    """Lines from a child's unbuffered stdout, each awaited with a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.buf = b""

    def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"ws_load idle: no answer within {timeout:g}s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise BenchError(f"ws_load idle exited ({self.proc.wait(5)}) "
                                     f"before answering: {self.buf[-300:]!r}")
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        try:
            msg = json.loads(line)
        except ValueError:
            raise BenchError(f"ws_load idle: unreadable line {line[:200]!r}") from None
        if "error" in msg:
            raise BenchError(str(msg["error"]))
        return msg


def measure_idle(server: WsServer, args: argparse.Namespace) -> dict[str, Any]:
    """Server RSS before and after opening --idle-connections idle connections;
    then one echo on every connection proves they are all still served."""
    n = args.idle_connections
    time.sleep(0.5)
    rss0 = server.rss_kib()
    cmd = load_cmd("idle", server.port, "--connections", str(n), "--hold", "120",
                   "--max-seconds", "300")
    with open(server.log_path.with_suffix(".load.log"), "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err, bufsize=0)
    try:
        reader = LineReader(proc)
        ready = reader.read(timeout=120)
        if ready.get("event") != "ready" or ready.get("connections") != n:
            raise BenchError(f"ws_load idle: unexpected {ready}")
        time.sleep(args.settle)
        server.check_alive()
        rss1 = server.rss_kib()
        assert proc.stdin is not None
        proc.stdin.write(b"check\n")
        check = reader.read(timeout=120)
        if check.get("echoed") != n:
            raise BenchError(f"ws_load idle: only {check.get('echoed')} of {n} echoed")
        rss2 = server.rss_kib()
        proc.stdin.write(b"close\n")
        final = reader.read(timeout=60)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    if rss1 <= rss0:
        raise BenchError(f"RSS did not grow ({rss0} -> {rss1} KiB): not a measurement")
    return {
        "connections": n, "rss_before_kib": rss0, "rss_idle_kib": rss1,
        "rss_after_one_echo_each_kib": rss2,
        "kib_per_conn": round((rss1 - rss0) / n, 2),
        "kib_per_conn_after_echo": round((rss2 - rss0) / n, 2),
        "connect_s": ready.get("connect_s"), "check_s": check.get("check_s"),
        "final": final, "cmd": " ".join(cmd),
    }


# --------------------------------------------------------------------------
# Rounds
# --------------------------------------------------------------------------


@dataclass
class Cell:
    runs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def median(self, key: str) -> float | None:
        values = [r[key] for r in self.runs if r.get(key) is not None]
        return statistics.median(values) if values else None

    def max(self, key: str) -> float | None:
        values = [r[key] for r in self.runs if r.get(key) is not None]
        return max(values) if values else None


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _summary(sc: Scenario, r: dict[str, Any]) -> str:
    if sc.name == "ws_idle_mem":
        return (f"{r['kib_per_conn']:8.2f} KiB/conn  (RSS {r['rss_before_kib']} -> "
                f"{r['rss_idle_kib']} KiB)")
    lat = r[sc.latency]
    noisy = f"  [others used {r['foreign_cores']:.2f} cores]" if r.get("noisy") else ""
    return (f"{r['rate']:10.0f} {sc.unit}  {sc.latency} {lat:.2f}  gen {r['gen_cores']:.2f} "
            f"cores, server {r['server_cores']:.2f} cores{noisy}")


def bench_round(rnd: int, servers: list[str], scenarios: list[Scenario],
                args: argparse.Namespace, cells: dict[tuple[str, str], Cell],
                log_dir: Path) -> None:
    shift = rnd % len(servers)
    order = servers[shift:] + servers[:shift]
    _log(f"== round {rnd + 1}/{args.rounds}: {', '.join(order)}")
    for name in order:
        for sc in scenarios:
            cell = cells[(sc.name, name)]
            server = WsServer(name, bench.free_port(), log_dir / f"{name}-{sc.name}-r{rnd + 1}.log")
            try:
                server.start()
                verify(server)
                if sc.name == "ws_idle_mem":
                    result = measure_idle(server, args)
                else:
                    result = measure_rate(server, sc, args)
                server.check_alive()
                result["round"] = rnd + 1
                cell.runs.append(result)
                _log(f"   {name:16s} {sc.name:12s} {_summary(sc, result)}")
            except BenchError as exc:
                msg = str(exc)
                if server.proc is not None and server.proc.poll() is not None:
                    msg += f" [server died, exit {server.proc.returncode}: {server._log_tail()}]"
                cell.errors.append(msg)
                _log(f"   {name:16s} {sc.name:12s} ERROR {msg}")
            finally:
                server.stop()


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _label(name: str) -> str:
    return f"{name} (reference)" if name == REFERENCE else name


def build_table(servers: list[str], scenarios: list[Scenario],
                cells: dict[tuple[str, str], Cell], args: argparse.Namespace) -> str:
    lines = [
        "| scenario | server | result (median) | latency (median) | ratio vs "
        f"{BASELINE} | generator CPU (max) | server CPU (median) | per round |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for sc in scenarios:
        base = cells.get((sc.name, BASELINE))
        base_v = base.median(sc.metric) if base and not base.errors else None
        for name in servers:
            cell = cells[(sc.name, name)]
            value = cell.median(sc.metric)
            if sc.name == "ws_idle_mem":
                shown = f"{_fmt(value, '.2f')} KiB/conn"
                lat = "—"
                per_round = ", ".join(f"{r['kib_per_conn']:.2f}" for r in cell.runs)
                gen, srv = "—", "—"
            else:
                shown = f"{_fmt(value, ',.0f')} {sc.unit}"
                lat_v = cell.median(sc.latency)
                lat = f"p99 {_fmt(lat_v, '.2f')} ms"
                per_round = ", ".join(f"{r['rate']:.0f}{'*' if r.get('noisy') else ''}"
                                      for r in cell.runs)
                gen = f"{_fmt(cell.max('gen_cores'), '.2f')} cores"
                srv = f"{_fmt(cell.median('server_cores'), '.2f')} cores"
            ratio = value / base_v if value is not None and base_v else None
            if cell.errors:
                first = cell.errors[0].replace("|", "/")
                if len(first) > 160:
                    first = first[:157] + "..."
                per_round = (per_round + "; " if per_round else "") + \
                    f"ERROR ({len(cell.errors)}×): {first}"
            lines.append(f"| {sc.name} | {_label(name)} | {shown} | {lat} | "
                         f"{_fmt(ratio, '.2f')}{'×' if ratio is not None else ''} | "
                         f"{gen} | {srv} | {per_round} |")
    return "\n".join(lines)


def evaluate_targets(servers: list[str], scenarios: list[Scenario],
                     cells: dict[tuple[str, str], Cell]) -> tuple[str, bool]:
    lines = ["| target | measured | met |", "|---|---|---|"]
    all_met = True

    def add(what: str, measured: str, ok: bool | None) -> None:
        nonlocal all_met
        if ok is not True:
            all_met = False
        mark = "yes" if ok else ("no" if ok is False else "n/a (missing data)")
        lines.append(f"| {what} | {measured} | {mark} |")

    def med(sc: str, name: str, key: str) -> float | None:
        cell = cells.get((sc, name))
        return cell.median(key) if cell and cell.runs and not cell.errors else None

    names = {sc.name for sc in scenarios}
    peers = [p for p in PEERS if p in servers]
    if "ws_echo" in names and "app_server" in servers:
        a = med("ws_echo", "app_server", "rate")
        for peer, need in (("uvicorn_wsproto", 1.5), ("uvicorn_ws", 1.0)):
            what = f"ws_echo: app_server ≥ {need:g}× {peer}"
            p = med("ws_echo", peer, "rate") if peer in servers else None
            if a is not None and p:
                add(what, f"{a / p:.2f}×", a >= need * p)
            else:
                add(what, "—", None)
    if "ws_echo" in names and "app_server_asgi" in servers:
        a = med("ws_echo", "app_server_asgi", "rate")
        p = med("ws_echo", "uvicorn_wsproto", "rate") if "uvicorn_wsproto" in servers else None
        what = "ws_echo: app_server_asgi (the same ASGI app) ≥ 1.5× uvicorn_wsproto"
        add(what, f"{a / p:.2f}×" if a is not None and p else "—",
            (a >= 1.5 * p) if a is not None and p else None)
    if "ws_bcast" in names and "app_server" in servers:
        a = med("ws_bcast", "app_server", "rate")
        vals = {p: med("ws_bcast", p, "rate") for p in peers}
        what = "ws_bcast: app_server ≥ 1.5× the best peer"
        if a is not None and vals and all(v is not None for v in vals.values()):
            best = max(vals, key=lambda p: vals[p])
            add(what, f"{a / vals[best]:.2f}× {best}", a >= 1.5 * vals[best])
        else:
            add(what, "— (every peer must have data)", None)
    if "ws_idle_mem" in names and "app_server" in servers:
        a = med("ws_idle_mem", "app_server", "kib_per_conn")
        vals = {p: med("ws_idle_mem", p, "kib_per_conn") for p in peers}
        what = "ws_idle_mem: app_server KiB/connection ≤ the best peer"
        if a is not None and vals and all(v is not None for v in vals.values()):
            best = min(vals, key=lambda p: vals[p])
            add(what, f"{a:.2f} vs {vals[best]:.2f} KiB ({best})", a <= vals[best])
        else:
            add(what, "— (every peer must have data)", None)
    return "\n".join(lines), all_met


def generator_evidence(servers: list[str], scenarios: list[Scenario],
                       cells: dict[tuple[str, str], Cell]) -> list[str]:
    """Lines showing whether the load generator could be the bottleneck."""
    out = []
    for sc in scenarios:
        if sc.name == "ws_idle_mem":
            continue
        runs = [(name, r) for name in servers for r in cells[(sc.name, name)].runs]
        if not runs:
            continue
        fw = [(n, r) for n, r in runs if n != REFERENCE]
        worst = max(fw or runs, key=lambda nr: nr[1]["gen_cores"])
        app = cells[(sc.name, "app_server")].median("rate") if "app_server" in servers else None
        bare = cells[(sc.name, REFERENCE)].median("rate") if REFERENCE in servers else None
        least = min(fw or runs, key=lambda nr: nr[1]["server_cores"] or 0.0)
        line = (f"- {sc.name}: the generator used at most {worst[1]['gen_cores']:.2f} of its "
                f"core against any framework server ({worst[0]}, whose core was at "
                f"{worst[1]['server_cores']:.2f}); the least busy framework server core was at "
                f"{least[1]['server_cores']:.2f} ({least[0]})")
        if bare is not None:
            line += f"; it drives {REFERENCE} to {bare:,.0f} {sc.unit}"
            if app:
                line += f" = {bare / app:.2f}× app_server's {app:,.0f}"
        out.append(line + ".")
    return out


# --------------------------------------------------------------------------
# Profile mode
# --------------------------------------------------------------------------


def _summarise(raw_path: Path, top: int) -> str:
    """bench/profile.py's summary (loaded by path: 'profile' is a stdlib name)."""
    spec = importlib.util.spec_from_file_location("bench_profile", BENCH_DIR / "profile.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.summarise(raw_path, top)


def run_profile(args: argparse.Namespace, scenarios: list[Scenario], servers: list[str]) -> int:
    """py-spy (core 1, with the generator) on the server under ws_echo / ws_bcast."""
    py_spy = bench._bin("py-spy")
    if not Path(py_spy).exists():
        sys.exit("error: py-spy not found (pip install py-spy into the bench venv)")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    status = 0
    for name in servers:
        for sc in scenarios:
            if sc.name == "ws_idle_mem":
                continue
            raw_path = OUT_DIR / f"ws-profile-{name}-{sc.name}.txt"
            server = WsServer(name, bench.free_port(), OUT_DIR / "logs" / f"ws-profile-{name}.log")
            spy: subprocess.Popen[bytes] | None = None
            try:
                server.start()
                verify(server)
                spy_cmd = ["taskset", "-c", LOAD_CPU, py_spy, "record", "--pid", str(server.pid),
                           "--subprocesses", "--rate", str(args.profile_rate),
                           "--duration", str(args.duration + args.warmup + 3),
                           "--format", "raw", "--output", str(raw_path), "--nonblocking"]
                spy = subprocess.Popen(spy_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                result: dict[str, Any] = {}
                errors: list[BaseException] = []

                def load(server: WsServer = server, sc: Scenario = sc,
                         result: dict[str, Any] = result,
                         errors: list[BaseException] = errors) -> None:
                    try:
                        mode = "echo" if sc.name == "ws_echo" else "bcast"
                        result.update(run_load(mode, server.port, _load_args(
                            sc, args, server, args.duration, args.warmup),
                            timeout=args.duration + args.warmup + 180))
                    except BaseException as exc:  # reported below
                        errors.append(exc)

                worker = threading.Thread(target=load)
                worker.start()
                worker.join()
                out, _ = spy.communicate(timeout=args.duration + args.warmup + 60)
                if spy.returncode != 0:
                    raise BenchError(f"py-spy exited {spy.returncode}: {out.decode()[-400:]}")
                spy = None
                if errors:
                    raise errors[0]
                print(f"## Profile: {name} / {sc.name} ({args.duration} s, py-spy "
                      f"{args.profile_rate} Hz)\n")
                print(f"Under profiling: {result['rate']:.0f} {sc.unit}, "
                      f"{sc.latency} {result[sc.latency]:.2f} (py-spy shares core 1 with the "
                      "generator).\n")
                print(_summarise(raw_path, args.top))
                print(f"\nCollapsed stacks: {raw_path.relative_to(REPO_ROOT)}\n")
            except BenchError as exc:
                print(f"error: {name} {sc.name}: {exc}", file=sys.stderr)
                status = 1
            finally:
                if spy is not None and spy.poll() is None:
                    spy.terminate()
                    try:
                        spy.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        spy.kill()
                        spy.wait(timeout=5)
                server.stop()
    return status


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

PACKAGES = ["app-server", "uvicorn", "httptools", "uvloop", "websockets", "wsproto", "sanic",
            "aiohttp", "py-spy"]


def machine_facts() -> dict[str, Any]:
    facts = bench.machine_facts()
    facts.pop("wrk", None)
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    facts["packages"] = versions
    return facts


def raise_nofile(need: int) -> None:
    """Servers and the generator inherit this limit: 2000+ connections need it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            sys.exit(f"error: RLIMIT_NOFILE hard limit {hard} < {need} (ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def other_benchmarks() -> list[str]:
    """Other bench/run.py or bench/ws_run.py processes (not this one or its parents)."""
    mine = set()
    pid = os.getpid()
    while pid > 1:
        mine.add(pid)
        rest = bench._proc_stat(pid)
        if rest is None:
            break
        pid = int(rest[1])
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(a.endswith((b"bench/run.py", b"bench/ws_run.py")) for a in argv):
            found.append(f"{entry}: {b' '.join(argv).decode(errors='replace').strip()}")
    return found


def wait_for_other_benchmarks(limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    others = other_benchmarks()
    if others:
        _log(f"waiting (up to {limit_s:.0f}s) for another benchmark to finish: {others[0]}")
    while others:
        if time.monotonic() > deadline:
            sys.exit(f"error: another benchmark is still running: {others[0]}")
        time.sleep(2.0)
        others = other_benchmarks()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of load before each measurement, same connections")
    parser.add_argument("--echo-connections", type=int, default=64)
    parser.add_argument("--bcast-connections", type=int, default=1000)
    parser.add_argument("--window", type=int, default=32,
                        help="ws_bcast: broadcasts outstanding at most (default 32)")
    parser.add_argument("--nap-us", type=int, default=5000,
                        help="ws_bcast: the generator sleeps this long once per loop "
                             "iteration so that its reads batch (default 5000)")
    parser.add_argument("--idle-connections", type=int, default=2000)
    parser.add_argument("--settle", type=float, default=1.0,
                        help="ws_idle_mem: seconds between the last handshake and the reading")
    parser.add_argument("--quiet-wait", type=float, default=30.0,
                        help="seconds to wait, before each measurement, for other "
                             "processes to leave the cores idle (default 30)")
    parser.add_argument("--retries", type=int, default=2,
                        help="re-measure a run during which other processes used "
                             f">= {bench.NOISE_LIMIT} cores (default 2)")
    parser.add_argument("--wait-others", type=float, default=1800.0,
                        help="seconds to wait for another bench/run.py or ws_run.py to end")
    parser.add_argument("--servers", default=None,
                        help=f"comma-separated subset of {','.join(SERVERS)} (default: all; "
                             "with --profile: app_server)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the benchmark: py-spy each --servers (default "
                             "app_server) under ws_echo and ws_bcast; collapsed stacks to "
                             "bench/out/ws-profile-<server>-<scenario>.txt")
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples/s")
    parser.add_argument("--top", type=int, default=25, help="--profile: rows per summary")
    args = parser.parse_args(argv)

    if args.servers is None:
        args.servers = "app_server" if args.profile else ",".join(DEFAULT_SERVERS)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in servers:
        if s not in SERVERS:
            parser.error(f"unknown server {s}")
    for s in names:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s}")
    scenarios = [SCENARIOS[s] for s in names]
    if not (1 <= args.rounds <= 20 and 1 <= args.duration <= 60 and 0 <= args.warmup <= 10
            and 1 <= args.echo_connections <= 1024 and 2 <= args.bcast_connections <= 5000
            and 1 <= args.window <= 256 and 0 <= args.nap_us <= 50000
            and 1 <= args.idle_connections <= 10000
            and 0 <= args.settle <= 10 and 0 <= args.quiet_wait <= 300
            and 0 <= args.retries <= 5 and 0 <= args.wait_others <= 7200):
        parser.error("bounds: 1-20 rounds, 1-60 s duration, 0-10 s warm-up, 1-1024 echo / "
                     "2-5000 bcast / 1-10000 idle connections, window 1-256, nap 0-50000 us, "
                     "settle 0-10 s, "
                     "0-300 s quiet-wait, 0-5 retries, 0-7200 s wait-others")
    if (os.cpu_count() or 1) < 2:
        sys.exit("error: needs 2 cores (server on core 0, load generator on core 1)")
    raise_nofile(max(args.idle_connections, args.bcast_connections) + 1024)
    wait_for_other_benchmarks(args.wait_others)

    if args.profile:
        try:
            return run_profile(args, scenarios, servers)
        finally:
            bench.stop_all()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = OUT_DIR / "logs" / f"ws-{stamp}"
    cells = {(sc.name, name): Cell() for sc in scenarios for name in servers}
    facts = machine_facts()
    command = " ".join([Path(sys.executable).as_posix(), *sys.argv])

    def _on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, SIGTERM and SIGHUP all end the run through the same finally.
    previous = {sig: signal.signal(sig, _on_term)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    interrupted = False
    started = time.time()
    try:
        for rnd in range(args.rounds):
            bench_round(rnd, servers, scenarios, args, cells, log_dir)
    except KeyboardInterrupt:
        interrupted = True
        _log("\ninterrupted: stopping servers, reporting what was measured")
    finally:
        bench.stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    table = build_table(servers, scenarios, cells, args)
    targets, all_met = evaluate_targets(servers, scenarios, cells)
    evidence = generator_evidence(servers, scenarios, cells)
    commands = {name: " ".join(["taskset", "-c", SERVER_CPU, *SERVERS[name](0)])
                .replace("--port 0", "--port PORT") for name in servers}
    load_commands = {
        "ws_echo": " ".join(load_cmd("echo", 0, "--connections", str(args.echo_connections),
                                     "--duration", str(args.duration), "--warmup",
                                     str(args.warmup))),
        "ws_bcast": " ".join(load_cmd("bcast", 0, "--connections", str(args.bcast_connections),
                                      "--window", str(args.window), "--nap-us",
                                      str(args.nap_us), "--duration",
                                      str(args.duration), "--warmup", str(args.warmup))),
        "ws_idle_mem": " ".join(load_cmd("idle", 0, "--connections",
                                         str(args.idle_connections))),
    }
    load_commands = {k: v.replace(sys.executable, "python").replace(str(REPO_ROOT) + "/", "")
                     .replace("--port 0", "--port PORT") for k, v in load_commands.items()
                     if k in names}

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    raw = {
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "interrupted": interrupted,
        "settings": {"rounds": args.rounds, "duration_s": args.duration,
                     "warmup_s": args.warmup, "echo_connections": args.echo_connections,
                     "bcast_connections": args.bcast_connections, "window": args.window,
                     "nap_us": args.nap_us,
                     "idle_connections": args.idle_connections, "settle_s": args.settle,
                     "quiet_wait_s": args.quiet_wait, "retries": args.retries,
                     "noise_limit_cores": bench.NOISE_LIMIT,
                     "server_cpu": SERVER_CPU, "load_cpu": LOAD_CPU},
        "machine": facts,
        "server_commands": commands,
        "load_commands": load_commands,
        "results": {f"{sc}/{name}": {"runs": c.runs, "errors": c.errors,
                                      "median": c.median(SCENARIOS[sc].metric)}
                    for (sc, name), c in cells.items()},
        "generator_evidence": evidence,
        "targets_met": all_met,
    }
    out_file = OUT_DIR / f"ws-results-{stamp}.json"
    out_file.write_text(json.dumps(raw, indent=2))
    (OUT_DIR / "ws-latest.json").write_text(json.dumps(raw, indent=2))

    print(f"## WebSocket benchmark ({args.rounds} rounds × {args.duration:g} s, server on "
          f"core {SERVER_CPU}, load generator bench/ws_load.py on core {LOAD_CPU})")
    print()
    print(f"Command: `{command}`")
    print()
    print(f"ws_echo: {args.echo_connections} connections, 64-byte text echo loop; ws_bcast: "
          f"{args.bcast_connections} connections, one of them triggers, at most {args.window} "
          f"broadcasts outstanding, reads batched by a {args.nap_us} µs nap per generator loop "
          f"iteration, latency = trigger sent to last receipt; ws_idle_mem: "
          f"{args.idle_connections} idle connections, RSS (server + children) growth.")
    print()
    print(table)
    print()
    noisy = sum(1 for c in cells.values() for r in c.runs if r.get("noisy"))
    print(f"Runs during which other processes used ≥ {bench.NOISE_LIMIT} cores "
          f"(after {args.retries} retries): {noisy}" + (" (marked *)" if noisy else ""))
    print()
    print("### Targets (app_server)")
    print()
    print(targets)
    print()
    print("### Is the load generator the bottleneck?")
    print()
    print("\n".join(evidence) if evidence else "(no rate measurement)")
    print()
    pk = ", ".join(f"{k} {v}" for k, v in facts["packages"].items() if v)
    print(f"Machine: {facts['nproc']} cores, {facts['cpu_model']}, kernel {facts['kernel']}, "
          f"Python {facts['python']}; {pk}; app-server git {facts['app_server_git']}")
    print()
    print("Server commands:")
    for name, cmd in commands.items():
        print(f"- {name}: `{cmd}`")
    print()
    print("Load commands:")
    for name, cmd in load_commands.items():
        print(f"- {name}: `{cmd}`")
    print()
    print(f"Raw results: {out_file.relative_to(REPO_ROOT)}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        bench.stop_all()
