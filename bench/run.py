#!/usr/bin/env python3
"""HTTP benchmark: app-server against peer servers, in one run, as ratios.

Run it with the Python of the benchmark virtualenv (the one that has uvicorn,
granian, sanic and app-server installed), from anywhere:

    /work/bench-venv/bin/python bench/run.py --rounds 3 --duration 5

Every server is started with one worker/process, pinned to core 0
(``taskset -c 0``); wrk runs pinned to core 1 with ``-t1 -c64 --latency``.
Each round runs every server on every scenario (the server order rotates from
one round to the next); the table shows medians over the rounds and the ratio
against ``uvicorn_raw``. Only 127.0.0.1 is ever targeted; every load is bounded
in time; every process started here is stopped by PID in a ``finally``.

Raw results go to bench/out/results-<stamp>.json (and bench/out/latest.json).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
HOST = "127.0.0.1"
SERVER_CPU = "0"
WRK_CPU = "1"
BASELINE = "uvicorn_raw"
START_DEADLINE = 15.0
STOP_DEADLINE = 5.0
ECHO_SIZE = 1024

# --------------------------------------------------------------------------
# Scenarios and servers
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    method: str
    path: str
    lua: str | None = None  # wrk script under bench/


SCENARIOS: dict[str, Scenario] = {
    "plaintext": Scenario("plaintext", "GET", "/"),
    "json": Scenario("json", "GET", "/json"),
    "post_echo": Scenario("post_echo", "POST", "/echo", lua="echo.lua"),
}


def _bin(name: str) -> str:
    """A console script of the virtualenv this harness runs in."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    return found or str(candidate)


def _cmd_app_server(port: int) -> list[str]:
    return [
        _bin("app-server"), "--host", HOST, "--port", str(port),
        "--no-access-log", "--log-level", "warning",
        "bench.apps.app_server_app:app",
    ]


def _cmd_app_server_nometrics(port: int) -> list[str]:
    # The same server with metrics recording off: the difference is their cost.
    return [*_cmd_app_server(port), "--metrics-bind", "off"]


def _cmd_uvicorn(port: int, target: str = "bench.apps.asgi_raw:app") -> list[str]:
    return [
        _bin("uvicorn"), target, "--host", HOST, "--port", str(port),
        "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
    ]


def _cmd_granian(port: int, target: str = "bench.apps.asgi_raw:app") -> list[str]:
    # Loop and runtime are granian's defaults (loop auto, runtime-mode auto,
    # 1 runtime thread); 1 worker; access log off.
    return [
        _bin("granian"), "--interface", "asgi", "--workers", "1", "--host", HOST,
        "--port", str(port), "--no-access-log", "--log-level", "warning",
        target,
    ]


# ASGI hosting (issue 13): app-server serving the very ASGI apps the peers serve.
FASTAPI_APP = "bench.apps.fastapi_hello:app"


def _cmd_app_server_asgi(port: int, target: str = "bench.apps.asgi_raw:app") -> list[str]:
    return [
        _bin("app-server"), "--host", HOST, "--port", str(port), "--interface", "asgi",
        "--no-access-log", "--log-level", "warning", target,
    ]


def _cmd_fastapi_app_server(port: int) -> list[str]:
    return _cmd_app_server_asgi(port, FASTAPI_APP)


def _cmd_fastapi_uvicorn(port: int) -> list[str]:
    return _cmd_uvicorn(port, FASTAPI_APP)


def _cmd_fastapi_granian(port: int) -> list[str]:
    return _cmd_granian(port, FASTAPI_APP)


def _cmd_sanic(port: int) -> list[str]:
    return [
        _bin("sanic"), "bench.apps.sanic_app:app", "--host", HOST, "--port", str(port),
        "--single-process", "--no-access-logs", "--no-motd",
    ]


def _cmd_bare(port: int) -> list[str]:
    return [sys.executable, str(BENCH_DIR / "apps" / "bare_protocol.py"),
            "--host", HOST, "--port", str(port)]


SERVERS: dict[str, Any] = {
    "app_server": _cmd_app_server,
    "uvicorn_raw": _cmd_uvicorn,
    "granian_raw": _cmd_granian,
    "sanic": _cmd_sanic,
    # Not a peer and not run by default: a ceiling reference (see its docstring).
    "bare_protocol": _cmd_bare,
    # Not run by default: app_server without metrics, for their overhead.
    "app_server_nometrics": _cmd_app_server_nometrics,
    # app-server hosting raw ASGI (bench/apps/asgi_raw.py, what uvicorn_raw and
    # granian_raw serve) and the FastAPI app on the three servers.
    "app_server_asgi": _cmd_app_server_asgi,
    "fastapi_app_server": _cmd_fastapi_app_server,
    "fastapi_uvicorn": _cmd_fastapi_uvicorn,
    "fastapi_granian": _cmd_fastapi_granian,
}
DEFAULT_SERVERS = ["app_server", "uvicorn_raw", "granian_raw", "sanic"]
# `--servers asgi`: the ASGI hosting comparison in one run.
ASGI_SERVERS = ["app_server_asgi", "uvicorn_raw", "granian_raw",
                "fastapi_app_server", "fastapi_uvicorn", "fastapi_granian"]
SERVER_PRESETS = {"default": DEFAULT_SERVERS, "asgi": ASGI_SERVERS}
# The row a server's ratio is taken against: the FastAPI app under uvicorn for
# the FastAPI rows, the raw ASGI app under uvicorn for everything else.
BASELINE_OF = {"fastapi_app_server": "fastapi_uvicorn", "fastapi_uvicorn": "fastapi_uvicorn",
               "fastapi_granian": "fastapi_uvicorn"}

# --------------------------------------------------------------------------
# Process handling (by PID only)
# --------------------------------------------------------------------------


class BenchError(Exception):
    """A measurement or a server that could not be used; shown in the table."""


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], ppid [1],
    start time [19]); None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()


def _children_of(pid: int) -> dict[int, str]:
    """All descendants of pid as {pid: start time}, read from /proc."""
    parents: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        rest = _proc_stat(int(entry))
        if rest is None or len(rest) < 20:
            continue
        parents.setdefault(int(rest[1]), []).append((int(entry), rest[19]))
    out: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child, start_time in parents.get(todo.pop(), []):
            out[child] = start_time
            todo.append(child)
    return out


def _same_alive(pid: int, start_time: str) -> bool:
    """True while that very process (pid + start time, so no reused PID) runs."""
    rest = _proc_stat(pid)
    return rest is not None and rest[0] != "Z" and rest[19] == start_time


class ServerProcess:
    """One server started by this harness; stop() ends it and its children."""

    def __init__(self, name: str, port: int, log_path: Path) -> None:
        self.name = name
        self.port = port
        self.log_path = log_path
        self.cmd = ["taskset", "-c", SERVER_CPU, *SERVERS[name](port)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.known_pids: dict[int, str] = {}

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env.pop("PYTHONDEVMODE", None)
        env["PYTHONUNBUFFERED"] = "1"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed when the child exits
        try:
            self.proc = subprocess.Popen(
                self.cmd, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()
        _LIVE.append(self)
        self._wait_ready()
        self.known_pids.update(_children_of(self.proc.pid))

    def _log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        text = [line.strip() for line in text if line.strip()]
        return " | ".join(text[-lines:])

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_DEADLINE
        last_error = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"start failed: exited with {self.proc.returncode}: {self._log_tail()}"
                )
            try:
                status, _, _ = http_request(self.port, "GET", "/", timeout=1.0)
                if status:
                    return
            except OSError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)
        raise BenchError(
            f"start failed: no answer within {START_DEADLINE:.0f}s ({last_error}); "
            f"{self._log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM the server's PID, SIGKILL after a deadline; then the same for
        any descendant (e.g. granian's worker) that outlived it. Only PIDs this
        harness started or their children, matched by start time."""
        if self.proc is None:
            return
        proc = self.proc
        pids = {**self.known_pids, **_children_of(proc.pid)}
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_DEADLINE)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=STOP_DEADLINE)
            deadline = time.monotonic() + STOP_DEADLINE
            while any(_same_alive(p, t) for p, t in pids.items()):
                if time.monotonic() > deadline:
                    for p, t in pids.items():
                        if _same_alive(p, t):
                            try:
                                os.kill(p, signal.SIGKILL)
                            except ProcessLookupError:
                                pass
                    break
                time.sleep(0.05)
        except (ProcessLookupError, subprocess.TimeoutExpired) as exc:
            print(f"warning: stopping {self.name} (pid {proc.pid}): {exc}", file=sys.stderr)
        finally:
            if self in _LIVE:
                _LIVE.remove(self)
            self.proc = None


_LIVE: list[ServerProcess] = []


def stop_all() -> None:
    for server in list(_LIVE):
        try:
            server.stop()
        except Exception as exc:  # pragma: no cover - best effort cleanup
            print(f"warning: stopping {server.name}: {exc}", file=sys.stderr)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


def http_request(
    port: int, method: str, path: str, body: bytes | None = None, timeout: float = 3.0
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {}
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def verify(port: int, scenario: Scenario) -> None:
    """Raise BenchError unless the server answers the scenario correctly."""
    try:
        if scenario.name == "plaintext":
            status, headers, body = http_request(port, "GET", "/")
            _expect(status == 200, f"status {status}")
            _expect(body == b"Hello, world!", f"body {body[:60]!r}")
            _expect(headers.get("content-type", "").startswith("text/plain"),
                    f"content-type {headers.get('content-type')!r}")
        elif scenario.name == "json":
            status, headers, body = http_request(port, "GET", "/json")
            _expect(status == 200, f"status {status}")
            _expect(json.loads(body) == {"message": "Hello, world!"}, f"body {body[:60]!r}")
            _expect(headers.get("content-type", "").startswith("application/json"),
                    f"content-type {headers.get('content-type')!r}")
        elif scenario.name == "post_echo":
            payload = bytes(random.getrandbits(8) for _ in range(ECHO_SIZE))
            status, headers, body = http_request(port, "POST", "/echo", body=payload)
            _expect(status == 200, f"status {status}")
            _expect(body == payload, f"echoed {len(body)} bytes, not the {ECHO_SIZE} sent")
            # and the exact body wrk sends
            lua_body = b"x" * ECHO_SIZE
            status, _, body = http_request(port, "POST", "/echo", body=lua_body)
            _expect(status == 200 and body == lua_body, "wrk body not echoed")
        else:  # pragma: no cover
            raise BenchError(f"unknown scenario {scenario.name}")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise BenchError(f"wrong response: {type(exc).__name__}: {exc}") from exc


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise BenchError(f"wrong response: {what}")


# --------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_DUR = r"([0-9]+(?:\.[0-9]+)?)(us|ms|s|m|h)"
_RE_RPS = re.compile(r"^Requests/sec:\s+([0-9]+(?:\.[0-9]+)?)\s*$", re.M)
_RE_TOTAL = re.compile(r"^\s*([0-9]+) requests in " + _DUR + r", ", re.M)
_RE_P = {
    "p50": re.compile(r"^\s+50(?:\.000)?%\s+" + _DUR + r"\s*$", re.M),
    "p90": re.compile(r"^\s+90(?:\.000)?%\s+" + _DUR + r"\s*$", re.M),
    "p99": re.compile(r"^\s+99(?:\.000)?%\s+" + _DUR + r"\s*$", re.M),
}
_RE_NON2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+([0-9]+)\s*$", re.M)
_RE_SOCKERR = re.compile(
    r"^\s*Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)",
    re.M,
)


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(output: str) -> dict[str, Any]:
    """Parse wrk --latency output; any missing field is an error, never a zero."""
    rps = _RE_RPS.search(output)
    total = _RE_TOTAL.search(output)
    if not rps or not total or "Latency Distribution" not in output:
        raise BenchError(f"unrecognised wrk output: {output.strip()[-300:]!r}")
    result: dict[str, Any] = {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)),
        "seconds": _ms(total.group(2), total.group(3)) / 1e3,
    }
    for key, rx in _RE_P.items():
        m = rx.search(output)
        if not m:
            raise BenchError(f"wrk output without {key}: {output.strip()[-300:]!r}")
        result[f"{key}_ms"] = _ms(m.group(1), m.group(2))
    m = _RE_NON2XX.search(output)
    result["non_2xx"] = int(m.group(1)) if m else 0
    m = _RE_SOCKERR.search(output)
    result["socket_errors"] = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True)) if m
        else {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    )
    return result


def run_wrk(port: int, scenario: Scenario, duration: int, connections: int) -> dict[str, Any]:
    cmd = [
        "taskset", "-c", WRK_CPU, "wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s",
        "--latency", "--timeout", "2s",
    ]
    if scenario.lua:
        cmd += ["-s", str(BENCH_DIR / scenario.lua)]
    cmd.append(f"http://{HOST}:{port}{scenario.path}")
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration + 20, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish within {duration + 20:g}s") from exc
    if proc.returncode != 0:
        first = " / ".join((proc.stderr + proc.stdout).strip().splitlines()[:2])
        raise BenchError(f"wrk exited {proc.returncode}: {first[:200]}")
    result = parse_wrk(proc.stdout)
    result["cmd"] = " ".join(cmd)
    errors = sum(result["socket_errors"].values())
    if result["requests"] == 0:
        raise BenchError("wrk completed no request")
    if result["non_2xx"]:
        raise BenchError(f"{result['non_2xx']} non-2xx responses under load")
    if errors > max(connections, result["requests"] // 1000):
        raise BenchError(f"socket errors under load: {result['socket_errors']}")
    return result


# --------------------------------------------------------------------------
# Other load on the machine (the 2 cores may be shared with other work)
# --------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")
NOISE_LIMIT = 0.10  # CPU used by others during a measurement, in cores


def _system_cpu() -> tuple[float, float]:
    """(busy CPU seconds = user+nice+system+irq+softirq, steal seconds) over all
    cores. irq/softirq ticks are also charged to the interrupted task's stime,
    so they belong here for the subtraction of the own processes' times."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in fields[1:9]
    )
    return (user + nice + system + irq + softirq) / _CLK_TCK, steal / _CLK_TCK


def _tree_cpu(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        rest = _proc_stat(pid)
        if rest is not None and len(rest) > 12:
            total += int(rest[11]) + int(rest[12])
    return total / _CLK_TCK


class CpuWatch:
    """CPU used during a window by anything but this harness, its children
    (wrk, once reaped) and the server under test."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server

    def _own(self) -> float:
        pids = [os.getpid()]
        if self.server.pid is not None:
            pids += [self.server.pid, *_children_of(self.server.pid)]
        import resource

        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return _tree_cpu(pids) + kids.ru_utime + kids.ru_stime

    def __enter__(self) -> CpuWatch:
        self.t0 = time.monotonic()
        self.sys0, self.steal0 = _system_cpu()
        self.own0 = self._own()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(time.monotonic() - self.t0, 1e-3)
        sys1, steal1 = _system_cpu()
        own = self._own() - self.own0
        foreign = (sys1 - self.sys0) - own
        self.own_cores = own / wall
        self.busy_cores = (sys1 - self.sys0) / wall
        self.foreign_cores = max(foreign, 0.0) / wall
        self.steal_cores = (steal1 - self.steal0) / wall


def wait_quiet(server: ServerProcess, limit_s: float) -> float:
    """Wait (up to limit_s) until others use < NOISE_LIMIT cores over 1 s;
    returns the last reading."""
    deadline = time.monotonic() + limit_s
    while True:
        with CpuWatch(server) as watch:
            time.sleep(1.0)
        if watch.foreign_cores < NOISE_LIMIT or time.monotonic() >= deadline:
            return watch.foreign_cores


# --------------------------------------------------------------------------
# Rounds, medians, table
# --------------------------------------------------------------------------


@dataclass
class Cell:
    runs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def median(self, key: str) -> float | None:
        values = [r[key] for r in self.runs]
        return statistics.median(values) if values else None


def measure(server: ServerProcess, sc: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    """One measured wrk run; if other processes used the cores meanwhile, wait
    for quiet and measure again (at most --retries times), keeping the run
    with the least foreign CPU."""
    best: dict[str, Any] | None = None
    for attempt in range(args.retries + 1):
        quiet_before = wait_quiet(server, args.quiet_wait)
        with CpuWatch(server) as watch:
            result = run_wrk(server.port, sc, args.duration, args.connections)
        result.update(
            foreign_cores=round(watch.foreign_cores, 3),
            busy_cores=round(watch.busy_cores, 3),
            own_cores=round(watch.own_cores, 3),
            steal_cores=round(watch.steal_cores, 3),
            foreign_cores_before=round(quiet_before, 3),
            attempt=attempt + 1,
        )
        result["noisy"] = watch.foreign_cores >= NOISE_LIMIT
        if best is None or result["foreign_cores"] < best["foreign_cores"]:
            best = result
        if not result["noisy"]:
            break
        print(f"   ({server.name} {sc.name}: others used {watch.foreign_cores:.2f} cores "
              f"during the run; attempt {attempt + 1}/{args.retries + 1})",
              file=sys.stderr, flush=True)
    assert best is not None
    return best


def bench_round(
    rnd: int, servers: list[str], scenarios: list[Scenario], args: argparse.Namespace,
    cells: dict[tuple[str, str], Cell], log_dir: Path,
) -> None:
    shift = rnd % len(servers)
    order = servers[shift:] + servers[:shift]
    print(f"== round {rnd + 1}/{args.rounds}: {', '.join(order)}", file=sys.stderr, flush=True)
    for name in order:
        server = ServerProcess(name, free_port(), log_dir / f"{name}-r{rnd + 1}.log")
        try:
            try:
                server.start()
            except BenchError as exc:
                print(f"   {name}: {exc}", file=sys.stderr, flush=True)
                for sc in scenarios:
                    cells[(sc.name, name)].errors.append(str(exc))
                continue
            for sc in scenarios:
                cell = cells[(sc.name, name)]
                try:
                    verify(server.port, sc)
                    if args.warmup > 0:
                        run_wrk(server.port, sc, args.warmup, args.connections)
                    result = measure(server, sc, args)
                    result["round"] = rnd + 1
                    cell.runs.append(result)
                    noisy = (f"  [others used {result['foreign_cores']:.2f} cores]"
                             if result["noisy"] else "")
                    print(
                        f"   {name:12s} {sc.name:10s} {result['rps']:10.0f} req/s  "
                        f"p99 {result['p99_ms']:.2f} ms{noisy}",
                        file=sys.stderr, flush=True,
                    )
                except BenchError as exc:
                    cell.errors.append(str(exc))
                    print(f"   {name:12s} {sc.name:10s} ERROR {exc}", file=sys.stderr, flush=True)
                if server.proc is not None and server.proc.poll() is not None:
                    msg = f"server died (exit {server.proc.returncode}): {server._log_tail()}"
                    for rest in scenarios[scenarios.index(sc) + 1:]:
                        cells[(rest.name, name)].errors.append(msg)
                    break
        finally:
            server.stop()


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def build_table(
    servers: list[str], scenarios: list[Scenario], cells: dict[tuple[str, str], Cell]
) -> str:
    lines = [
        "| scenario | server | req/s (median) | p99 ms (median) | req/s ratio vs "
        "baseline | p99 ratio vs baseline | req/s per round |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for sc in scenarios:
        for name in servers:
            baseline = BASELINE_OF.get(name, BASELINE)
            base = cells[(sc.name, baseline)] if baseline in servers else None
            base_rps = base.median("rps") if base else None
            base_p99 = base.median("p99_ms") if base else None
            cell = cells[(sc.name, name)]
            rps, p99 = cell.median("rps"), cell.median("p99_ms")
            ratio = rps / base_rps if rps is not None and base_rps else None
            p99_ratio = p99 / base_p99 if p99 is not None and base_p99 else None
            per_round = ", ".join(f"{r['rps']:.0f}{'*' if r.get('noisy') else ''}"
                                  for r in cell.runs)
            if cell.errors:
                first = cell.errors[0].replace("|", "/")
                if len(first) > 160:
                    first = first[:157] + "..."
                per_round = (per_round + "; " if per_round else "") + \
                    f"ERROR ({len(cell.errors)}×): {first}"
            lines.append(
                f"| {sc.name} | {name} | {_fmt(rps, ',.0f')} | {_fmt(p99, '.2f')} | "
                f"{_fmt(ratio, '.2f')}× | {_fmt(p99_ratio, '.2f')}× | {per_round} |"
                .replace("—×", "—")
            )
    return "\n".join(lines)


TARGETS = {"plaintext": 1.5, "json": 1.5, "post_echo": 1.3}
# ASGI hosting (issue 13): (scenario, server, baseline, ratio needed).
ASGI_TARGETS = [
    ("plaintext", "app_server_asgi", BASELINE, 1.3),
    ("json", "app_server_asgi", BASELINE, 1.3),
    ("plaintext", "fastapi_app_server", "fastapi_uvicorn", 1.15),
]
# Shown beside the targets, not targets: app-server against granian on the same app.
ASGI_GRANIAN = [("app_server_asgi", "granian_raw"), ("fastapi_app_server", "fastapi_granian")]


def evaluate_targets(
    servers: list[str], scenarios: list[Scenario], cells: dict[tuple[str, str], Cell]
) -> tuple[str, bool]:
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
        return cell.median(key) if cell and not cell.errors else None

    for sc_name, name, baseline, need in ASGI_TARGETS:
        if name not in servers or sc_name not in {sc.name for sc in scenarios}:
            continue
        a, u = med(sc_name, name, "rps"), med(sc_name, baseline, "rps")
        add(f"{sc_name}: {name} ≥ {need}× {baseline}",
            f"{a / u:.2f}×" if a is not None and u else "—",
            (a / u >= need) if a is not None and u else None)
    for name, peer in ASGI_GRANIAN:
        if name not in servers or peer not in servers:
            continue
        for sc in scenarios:
            a, g = med(sc.name, name, "rps"), med(sc.name, peer, "rps")
            if a is not None and g:
                lines.append(f"| {sc.name}: {name} vs {peer} (reported, not a target) | "
                             f"{a / g:.2f}× | — |")
    for sc in scenarios:
        if sc.name not in TARGETS or "app_server" not in servers:
            continue
        a, u = med(sc.name, "app_server", "rps"), med(sc.name, BASELINE, "rps")
        need = TARGETS[sc.name]
        if a is not None and u:
            add(f"{sc.name}: app_server ≥ {need}× {BASELINE}", f"{a / u:.2f}×", a / u >= need)
        else:
            add(f"{sc.name}: app_server ≥ {need}× {BASELINE}", "—", None)
        if sc.name in ("plaintext", "json") and "granian_raw" in servers:
            g = med(sc.name, "granian_raw", "rps")
            if a is not None and g:
                add(f"{sc.name}: app_server ahead of granian_raw", f"{a / g:.2f}×", a > g)
            else:
                add(f"{sc.name}: app_server ahead of granian_raw", "—", None)
        ap, up = med(sc.name, "app_server", "p99_ms"), med(sc.name, BASELINE, "p99_ms")
        if ap is not None and up is not None:
            add(f"{sc.name}: app_server p99 ≤ {BASELINE} p99",
                f"{ap:.2f} ms vs {up:.2f} ms", ap <= up)
        else:
            add(f"{sc.name}: app_server p99 ≤ {BASELINE} p99", "—", None)
    return "\n".join(lines), all_met


# --------------------------------------------------------------------------
# Machine facts
# --------------------------------------------------------------------------

PACKAGES = ["app-server", "uvicorn", "httptools", "uvloop", "granian", "sanic", "py-spy",
            "fastapi", "starlette"]


def machine_facts() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5)
        wrk_version = (wrk.stdout + wrk.stderr).strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        wrk_version = "unknown"
    try:
        rev = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        rev = ""
    return {
        "app_server_git": rev or "unknown",
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "packages": versions,
        "wrk": wrk_version,
    }


def _check_tools() -> None:
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"error: {tool} not found (apt-get install -y wrk util-linux)")
    if (os.cpu_count() or 1) < 2:
        sys.exit("error: needs 2 cores (server on core 0, wrk on core 1)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up (0: none)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--quiet-wait", type=float, default=30.0,
                        help="seconds to wait, before each measurement, for other "
                             "processes to leave the cores idle (default 30)")
    parser.add_argument("--retries", type=int, default=2,
                        help="re-measure a run during which other processes used "
                             f">= {NOISE_LIMIT} cores (default 2)")
    parser.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                        help=f"comma-separated subset of {','.join(SERVERS)}, or a preset: "
                             f"{', '.join(SERVER_PRESETS)} (asgi: the ASGI hosting run)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {','.join(SCENARIOS)}")
    args = parser.parse_args(argv)

    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    servers = [n for s in servers for n in SERVER_PRESETS.get(s, [s])]
    scenario_names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in servers:
        if s not in SERVERS:
            parser.error(f"unknown server {s}")
    for s in scenario_names:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s}")
    scenarios = [SCENARIOS[s] for s in scenario_names]
    if not (1 <= args.rounds <= 20 and 1 <= args.duration <= 60 and 0 <= args.warmup <= 10
            and 1 <= args.connections <= 1024 and 0 <= args.quiet_wait <= 300
            and 0 <= args.retries <= 5):
        parser.error("bounds: 1-20 rounds, 1-60 s duration, 0-10 s warm-up, "
                     "1-1024 connections, 0-300 s quiet-wait, 0-5 retries")
    _check_tools()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = OUT_DIR / "logs" / stamp
    cells = {(sc.name, name): Cell() for sc in scenarios for name in servers}
    facts = machine_facts()
    command = " ".join([Path(sys.executable).as_posix(), *sys.argv])

    def _on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, SIGTERM and SIGHUP all end the run through the same finally,
    # also when SIGINT was inherited as ignored (a background job).
    previous = {sig: signal.signal(sig, _on_term)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    interrupted = False
    started = time.time()
    try:
        for rnd in range(args.rounds):
            bench_round(rnd, servers, scenarios, args, cells, log_dir)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping servers, reporting what was measured", file=sys.stderr)
    finally:
        stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    table = build_table(servers, scenarios, cells)
    targets, all_met = evaluate_targets(servers, scenarios, cells)
    commands = {name: " ".join(["taskset", "-c", SERVER_CPU, *SERVERS[name](0)])
                .replace("--port 0", "--port PORT") for name in servers}

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    raw = {
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "interrupted": interrupted,
        "settings": {"rounds": args.rounds, "duration_s": args.duration,
                     "warmup_s": args.warmup, "connections": args.connections,
                     "quiet_wait_s": args.quiet_wait, "retries": args.retries,
                     "noise_limit_cores": NOISE_LIMIT,
                     "wrk_threads": 1, "server_cpu": SERVER_CPU, "wrk_cpu": WRK_CPU},
        "machine": facts,
        "server_commands": commands,
        "results": {f"{sc}/{name}": {"runs": c.runs, "errors": c.errors,
                                      "median_rps": c.median("rps"),
                                      "median_p99_ms": c.median("p99_ms")}
                    for (sc, name), c in cells.items()},
        "targets_met": all_met,
    }
    out_file = OUT_DIR / f"results-{stamp}.json"
    out_file.write_text(json.dumps(raw, indent=2))
    (OUT_DIR / "latest.json").write_text(json.dumps(raw, indent=2))

    print(f"## HTTP benchmark ({args.rounds} rounds × {args.duration:g} s, "
          f"wrk -t1 -c{args.connections}, server on core {SERVER_CPU}, wrk on core {WRK_CPU})")
    print()
    print(f"Command: `{command}`")
    print()
    print(table)
    print()
    noisy = sum(1 for c in cells.values() for r in c.runs if r.get("noisy"))
    print(f"Runs during which other processes used ≥ {NOISE_LIMIT} cores "
          f"(after {args.retries} retries): {noisy}" + (" (marked *)" if noisy else ""))
    print()
    print("### Targets")
    print()
    print(targets)
    print()
    pk = ", ".join(f"{k} {v}" for k, v in facts["packages"].items() if v)
    print(f"Machine: {facts['nproc']} cores, {facts['cpu_model']}, kernel {facts['kernel']}, "
          f"Python {facts['python']}; {pk}; {facts['wrk']}; "
          f"app-server git {facts['app_server_git']}")
    print()
    print("Server commands:")
    for name, cmd in commands.items():
        print(f"- {name}: `{cmd}`")
    print()
    print(f"Raw results: {out_file.relative_to(REPO_ROOT)}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
