"""config/grafana-dashboard.json: importable, over every metric, and only real names (issue 12).

The dashboard must import into any Grafana (its data source is the
``${DS_PROMETHEUS}`` input chosen at import), show every metric of SPEC §7
and the channel metrics of §9, and query only names the server really
exposes: a real master with two workers is scraped after HTTP and WebSocket
traffic (pings answered, a WebSocket open, so that every family has samples)
and every metric name in every dashboard expression and every alerting rule
(config/app-server-alerts.yml) must be in that scrape.
The channel metrics of §9 (``CHANNEL_METRICS``) must be on the dashboard and
in that same scrape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect as ws_connect

from tests.system.harness import Master, poll
from tests.system.test_metrics import APP

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "config" / "grafana-dashboard.json"
ALERTS = ROOT / "config" / "app-server-alerts.yml"
DS_UID = "${DS_PROMETHEUS}"

# SPEC §7's table, as sample names (counters with _total; histograms as families).
SPEC_7_METRICS = {
    "app_server_http_requests_total",
    "app_server_http_request_duration_seconds",
    "app_server_http_requests_in_progress",
    "app_server_websocket_connections",
    "app_server_websocket_connections_total",
    "app_server_websocket_messages_total",
    "app_server_websocket_closes_total",
    "app_server_websocket_ping_rtt_seconds",
    "app_server_workers",
    "app_server_workers_desired",
    "app_server_worker_memory_limit_bytes",
    "app_server_worker_restarts_total",
    "app_server_reloads_total",
    "app_server_worker_resident_memory_bytes",
    "app_server_worker_cpu_seconds_total",
}
HISTOGRAMS = {"app_server_http_request_duration_seconds", "app_server_websocket_ping_rtt_seconds"}
# SPEC §9's channel metrics: shown on the dashboard and exposed by the scrape.
CHANNEL_METRICS = {
    "app_server_channel_messages_total",
    "app_server_channel_subscriptions",
    "app_server_channel_backend_up",
    "app_server_channel_slow_closes_total",
}
NAME = re.compile(r"\b((?:app_server|process)_[a-z0-9_]+)\b")

StartMaster = Callable[..., Master]


def dashboard() -> dict[str, object]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def panels() -> list[dict[str, object]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]  # type: ignore[attr-defined]


def expressions() -> list[str]:
    exprs = [t["expr"] for p in panels() for t in p["targets"]]  # type: ignore[attr-defined]
    exprs += [
        v["definition"]
        for v in dashboard()["templating"]["list"]  # type: ignore[index]
        if v["type"] == "query"
    ]
    return exprs


def dashboard_names() -> set[str]:
    return {name for expr in expressions() for name in NAME.findall(expr)}


def alert_names() -> set[str]:
    return set(NAME.findall(ALERTS.read_text()))


def family(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
            return name.removesuffix(suffix)
    return name


def test_dashboard_is_importable_with_a_prometheus_input() -> None:
    data = dashboard()
    inputs = data["__inputs"]
    assert inputs == [
        {
            "name": "DS_PROMETHEUS",
            "label": "Prometheus",
            "description": "The Prometheus that scrapes app-server",
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }
    ]
    assert data["uid"] == "app-server" and data["title"] == "app-server"
    ids = [p["id"] for p in data["panels"]]  # type: ignore[attr-defined]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": DS_UID}, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]  # type: ignore[index,operator]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:  # type: ignore[attr-defined]
            assert target["datasource"] == {"type": "prometheus", "uid": DS_UID}
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
    for variable in data["templating"]["list"]:  # type: ignore[index]
        assert variable["datasource"] == {"type": "prometheus", "uid": DS_UID}


def test_dashboard_shows_every_metric_of_spec_7_and_the_channel_metrics() -> None:
    shown = {family(name) for name in dashboard_names()}
    assert SPEC_7_METRICS - shown == set()
    assert CHANNEL_METRICS - shown == set()
    # And every panel query is filtered by the instance variable.
    for expr in expressions()[:-1]:
        for name in NAME.findall(expr):
            assert re.search(re.escape(name) + r'\{instance=~"\$instance"', expr), expr


def test_every_name_in_dashboard_and_alerts_is_exposed_by_a_real_master(
    master: StartMaster,
) -> None:
    m = master(["--workers", "2", "--ws-ping-interval", "0.2", "app:app"], files={"app.py": APP})
    http = httpx.Client(timeout=10, headers={"Connection": "close"})
    with http:

        def ready() -> bool:
            m.check_alive()
            return _ok(http, m.metrics_url + "/readyz")

        poll(ready, 30, f"ready; log:\n{m.log()[-3000:]}")
        for i in range(10):
            assert http.get(f"{m.url}/items/{i}").status_code == 200
        assert http.get(f"{m.url}/nope").status_code == 404
        with ws_connect(f"ws://127.0.0.1:{m.port}/ws", open_timeout=10) as ws:
            ws.recv(timeout=10)  # the worker's pid
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
            with ws_connect(f"ws://127.0.0.1:{m.port}/ws", open_timeout=10) as closed:
                closed.recv(timeout=10)

            # The open connection answers the server's pings: wait for an RTT.
            def scraped() -> set[str] | None:
                names = _sample_names(http.get(m.metrics_url + "/metrics").text)
                wanted = {
                    "app_server_websocket_ping_rtt_seconds_bucket",
                    "app_server_websocket_connections",
                    "app_server_websocket_closes_total",
                }
                return names if wanted <= names else None

            exposed: set[str] = poll(scraped, 30, "every family with samples")

    missing = (dashboard_names() | alert_names() | CHANNEL_METRICS) - exposed
    assert missing == set(), f"not exposed by the server: {sorted(missing)}"


def _ok(http: httpx.Client, url: str) -> bool:
    try:
        return http.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _sample_names(body: str) -> set[str]:
    return {sample.name for fam in text_string_to_metric_families(body) for sample in fam.samples}
