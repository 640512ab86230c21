"""Scrape time and size of /metrics through worker churn.

Starts ``app-server --workers 2 --preload --max-requests 1`` on the bench app,
keeps one client sending requests (each worker is recycled after one
request), and scrapes ``/metrics`` at fixed numbers of worker replacements
(``app_server_worker_restarts_total{reason="max_requests"}``): 0, then every
``--step`` up to ``--replacements``. At each point it records the median wall
time of ``--scrapes`` scrapes, the body size and the number of series. Storage
is bounded when the time, the size and the series stay flat however many
workers have come and gone.

    /work/bench-venv/bin/python bench/metrics_churn.py --replacements 400 --step 100

Prints a table and writes the raw figures to bench/out/metrics-churn-<time>.json.
Loopback only; the server is stopped by PID at the end, even on failure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.metrics_overhead import stop_server  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def replacements(body: bytes) -> int:
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "app_server_worker_restarts":
            for sample in family.samples:
                if sample.labels.get("reason") == "max_requests" and sample.name.endswith("_total"):
                    return int(sample.value)
    return 0


def measure(metrics_port: int, scrapes: int) -> dict[str, float]:
    times = []
    body = b""
    for _ in range(scrapes):
        started = time.perf_counter()
        status, body = get(metrics_port, "/metrics")
        times.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
    series = sum(len(f.samples) for f in text_string_to_metric_families(body.decode()))
    return {
        "replacements": replacements(body),
        "scrape_ms_median": round(statistics.median(times) * 1000, 3),
        "scrape_ms_max": round(max(times) * 1000, 3),
        "bytes": len(body),
        "series": series,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replacements", type=int, default=400)
    parser.add_argument("--step", type=int, default=100)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args()
    port, metrics_port = free_port(), free_port()
    binary = Path(sys.executable).parent / "app-server"
    command = [
        str(binary), "--workers", "2", "--preload", "--max-requests", "1", "--timeout", "0.4",
        "--host", HOST, "--port", str(port), "--metrics-bind", f"{HOST}:{metrics_port}",
        "--no-access-log", "--log-level", os.environ.get("CHURN_LOG_LEVEL", "warning"),
        "bench.apps.app_server_app:app",
    ]
    server = subprocess.Popen(command, cwd=ROOT)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                get(port, "/", timeout=2.0)
            except OSError:
                time.sleep(0.01)  # a worker is being replaced: try again

    deadline = time.monotonic() + args.max_seconds
    rows = []
    try:
        while True:
            try:
                get(port, "/")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.05)
        rows.append(measure(metrics_port, args.scrapes))
        client = threading.Thread(target=load, daemon=True)
        client.start()
        target = args.step
        started = time.monotonic()
        while target <= args.replacements and time.monotonic() < deadline:
            _, body = get(metrics_port, "/metrics")
            if replacements(body) >= target:
                stop.set()
                client.join(5)
                rows.append(measure(metrics_port, args.scrapes))
                target += args.step
                stop.clear()
                client = threading.Thread(target=load, daemon=True)
                client.start()
            else:
                time.sleep(0.2)
        stop.set()
        churn_s = time.monotonic() - started
    finally:
        stop.set()
        stop_server(server)
    print(f"{'replacements':>12} {'scrape ms (median)':>19} {'max':>8} {'bytes':>7} {'series':>7}")
    for row in rows:
        print(f"{row['replacements']:>12} {row['scrape_ms_median']:>19} {row['scrape_ms_max']:>8} "
              f"{row['bytes']:>7} {row['series']:>7}")
    print(f"churn: {rows[-1]['replacements']} replacements in {churn_s:.1f}s")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    path = out / f"metrics-churn-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"rows": rows, "churn_seconds": churn_s, "command": command},
                               indent=2))
    print(f"raw: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
