"""The Bocadillo chat page (examples/ws_bocadillo_chat.py) in a real browser.

tests/browser/chat_two_pages.mjs drives Debian's chromium with playwright-core:
two pages join the room and see each other's messages, a third gets the
history. tests/browser/chat_two_workers.mjs does the same on the channels
version (examples/channels_bocadillo_chat.py) on a real master with 2 workers,
with the two pages' WebSockets on different workers. The tests fail, never
skip, when chromium, node or playwright-core is missing; .ci/run installs them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from examples import ws_bocadillo_chat
from examples.ws_bocadillo_chat import app
from tests.conftest import serve_app
from tests.system.harness import Master

BROWSER_DIR = Path(__file__).resolve().parents[1] / "browser"
SCRIPT = BROWSER_DIR / "chat_two_pages.mjs"
TWO_WORKERS_SCRIPT = BROWSER_DIR / "chat_two_workers.mjs"


def browser_tools() -> tuple[str, str]:
    """Paths of chromium and node; fail with what to install when one is missing."""
    chromium = (
        os.environ.get("CHROMIUM_PATH")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    node = shutil.which("node")
    missing = []
    if not chromium:
        missing.append("chromium (apt-get install -y chromium, or set CHROMIUM_PATH)")
    if not node:
        missing.append("node and npm (apt-get install -y nodejs npm)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").is_file():
        missing.append("playwright-core (cd tests/browser && npm ci)")
    if missing:
        pytest.fail(
            "the browser test needs " + "; ".join(missing) + ". .ci/run installs all of them.",
            pytrace=False,
        )
    assert chromium and node
    return chromium, node


@pytest.fixture
def empty_room() -> Iterator[None]:
    ws_bocadillo_chat.history.clear()
    yield
    ws_bocadillo_chat.history.clear()


@pytest.mark.slow
def test_two_browser_pages_chat_through_the_example(empty_room: None) -> None:
    chromium, node = browser_tools()
    with serve_app(app) as server:
        shown = run_script(node, chromium, SCRIPT, server.url + "/")
    expected = ["alice: hello from alice", "bob: hi alice"]
    assert shown == {"alice": expected, "bob": expected, "carol": expected, "pageErrors": []}
    # The server saw exactly what the pages sent: the blank message never left the page.
    assert ws_bocadillo_chat.history == [
        {"type": "message", "user": "alice", "text": "hello from alice"},
        {"type": "message", "user": "bob", "text": "hi alice"},
    ]


def run_script(node: str, chromium: str, script: Path, url: str) -> dict:
    """Run one browser script against ``url``; its JSON report."""
    try:
        done = subprocess.run(
            [node, str(script), url],
            cwd=BROWSER_DIR,
            env={**os.environ, "CHROMIUM_PATH": chromium},
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the browser script did not finish within 120 s: {exc.stderr!r}")
    report = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.slow
def test_two_browser_pages_on_different_workers_chat_through_channels(
    chat_master: Callable[..., Master],
) -> None:
    chromium, node = browser_tools()
    m = chat_master("examples.channels_bocadillo_chat:app", workers=2)
    workers = set(m.workers())
    shown = run_script(node, chromium, TWO_WORKERS_SCRIPT, m.url + "/")
    # The two pages talked from different workers of this master.
    assert shown["alice"]["pid"] != shown["bob"]["pid"]
    assert {shown["alice"]["pid"], shown["bob"]["pid"]} == workers
    expected = ["alice: hello from alice", "bob: hi alice"]
    for name in ("alice", "bob", "carol"):  # carol's from the channel history
        assert shown[name]["messages"] == expected, shown
    assert shown["pageErrors"] == []
