"""Smoke test of the channels benchmark's load generator (bench/ws_load.py
``chan`` mode) against the benchmark's channel app on an in-process worker
with the local backend: every connection receives every broadcast, in
order, checked byte for byte, and the JSON result has the figures
bench/channels_run.py reads. Tiny and unmeasured: the benchmark itself is
never run by the test suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.apps.channels_app_server import app
from tests.conftest import serve_app

LOAD = Path(__file__).resolve().parents[2] / "bench" / "ws_load.py"


def run_chan(port: int, *extra: str) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            str(LOAD),
            "chan",
            "--port",
            str(port),
            "--connections",
            "20",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--count-path",
            "/count",
            "--max-seconds",
            "60",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and "error" not in result, (result, done.stderr[-500:])
    return result  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", [["--window", "1"], ["--window", "32"], ["--rate", "50"]])
def test_chan_mode_delivers_every_broadcast_to_every_subscriber(mode: list[str]) -> None:
    with serve_app(app) as server:
        result = run_chan(server.port, *mode)
    assert result["mode"] == "chan" and result["connections"] == 20
    assert result["broadcasts"] > 0
    for key in ("rate", "p50_ms", "p99_ms", "p50_fanout_ms"):
        assert result[key] > 0, key
