"""Fixtures for the examples that run on a real master with many workers.

``channels_url`` yields the ``--channels`` value of each backend the
multi-worker example tests run on (the tests are parametrized over
``BACKENDS``). ``chat_master`` starts an example on a real master with
``--workers 4`` (stopped by the ``master`` fixture, also on failure) and
waits for all its workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.channels.conftest import flush, redis_server  # noqa: F401  (the session fixture)
from tests.system.harness import Master, master  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parents[2]

# The channel backends the multi-worker examples are tested on. "master"
# joins once `--channels master` exists (the default backend).
BACKENDS = ["redis", "master"]


@pytest.fixture(params=BACKENDS)
def channels_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        flush(server)  # the examples' topics start empty (fresh history epoch per test)
        yield server.url
    else:
        yield request.param


@pytest.fixture
def chat_master(
    master: Callable[..., Master],  # noqa: F811  (the fixture imported above)
    channels_url: str,
) -> Callable[..., Master]:
    """``chat_master("examples.x:app", workers=4)``: a running master of the example."""

    def start(target: str, workers: int = 4) -> Master:
        m = master(
            [
                "--app-dir",
                str(ROOT),
                "--workers",
                str(workers),
                "--channels",
                channels_url,
                "--no-access-log",
                target,
            ]
        )
        m.wait_log("listening on")
        m.wait_workers(lambda pids: len(pids) == workers)
        return m

    return start
