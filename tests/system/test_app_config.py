"""``app.config`` under a real master (SPEC §4 precedence): inside a worker it
reads the value in force of every server key, whichever layer set it, and a
key that looks like a server setting but is not one gets one warning naming
the nearest valid key when the worker starts."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.system.harness import Master, clean_env

APP = """
from app_server import App, json

app = App("config")
app.config.REQUEST_MAX_SIZE = 1234       # no higher layer: in force
app.config.KEEP_ALIVE_TIMEOUT = 1.5      # the environment overrides it
app.config.REQUEST_TIMEOUT = 3           # the command line overrides it
app.config.REQUEST_TIMOUT = 9            # a typo
app.config.WORKERS = 4                   # the master's key
app.config.CACHE_SIZE = 10               # the application's own
KEYS = ("REQUEST_MAX_SIZE", "KEEP_ALIVE_TIMEOUT", "REQUEST_TIMEOUT", "WEBSOCKET_MAX_SIZE",
        "RESPONSE_TIMEOUT", "CACHE_SIZE")
BEFORE = {key: app.config[key] for key in KEYS}


@app.get("/")
async def index(request):
    return json({"before": BEFORE, "now": {key: app.config[key] for key in KEYS}})
"""


def test_worker_reads_effective_values_and_warns_once_per_bad_key(
    master: Callable[..., Master],
) -> None:
    m = master(
        ["configapp:app", "--request-timeout", "7", "--config", "app.toml"],
        files={"configapp.py": APP, "app.toml": "ws_max_size = 2048\n"},
        env=clean_env(APP_SERVER_KEEP_ALIVE_TIMEOUT="3"),
    )
    m.wait_log("all 1 workers ready")
    body = httpx.get(m.url + "/", timeout=10).json()
    assert body["before"] == {
        "REQUEST_MAX_SIZE": 1234,
        "KEEP_ALIVE_TIMEOUT": 1.5,
        "REQUEST_TIMEOUT": 3,
        "WEBSOCKET_MAX_SIZE": 1_048_576,
        "RESPONSE_TIMEOUT": 60.0,
        "CACHE_SIZE": 10,
    }
    assert body["now"] == {
        "REQUEST_MAX_SIZE": 1234,
        "KEEP_ALIVE_TIMEOUT": 3.0,
        "REQUEST_TIMEOUT": 7.0,
        "WEBSOCKET_MAX_SIZE": 2048,
        "RESPONSE_TIMEOUT": 60.0,
        "CACHE_SIZE": 10,
    }
    log = m.log()
    assert (
        log.count(
            "app.config.REQUEST_TIMOUT is not an app-server setting and the server "
            "ignores it; did you mean REQUEST_TIMEOUT?"
        )
        == 1
    ), log
    assert log.count("app.config.WORKERS has no effect") == 1, log
    assert "CACHE_SIZE" not in log
