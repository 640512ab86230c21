"""mypy --strict and ruff, run by the test suite so the README's test command
(and so ``.ci/run``) enforces them.

The versions are pinned in the ``test`` extra and the settings live in
``pyproject.toml``; the tools run as ``python -m`` in this interpreter, so the
pins are what runs. A failure shows the tools' own output.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# mypy's cache outlives one run (a warm run takes a second instead of a few),
# kept out of the work tree.
MYPY_CACHE = Path(tempfile.gettempdir()) / f"app-server-mypy-{REPO.name}"
IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<rest>.*)$")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, check=False
    )


def test_mypy_strict() -> None:
    done = _run("mypy", "--cache-dir", str(MYPY_CACHE), "app_server")
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 2: mypy itself failed
    assert not errors, "\n".join(errors)


def test_ruff_lint() -> None:
    done = _run("ruff", "check", "--no-cache", "app_server", "tests", "bench", "examples")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format() -> None:
    done = _run(
        "ruff",
        "format",
        "--check",
        "--no-cache",
        "--output-format",
        "concise",
        "app_server",
        "tests",
    )
    unformatted = {
        line.split(":", 1)[0] for line in done.stdout.splitlines() if "unformatted" in line
    }
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert not unformatted, "run `ruff format` on:\n" + "\n".join(sorted(unformatted))


def test_every_type_ignore_has_a_code_and_a_reason() -> None:
    bare = []
    for path in sorted((REPO / "app_server").rglob("*.py")):
        rel = str(path.relative_to(REPO))
        for number, text in enumerate(path.read_text().splitlines(), 1):
            found = IGNORE.search(text)
            if found is None:
                continue
            reason = found["rest"].strip().lstrip("#").strip()
            if not found["codes"] or not reason:
                bare.append(f"{rel}:{number}: {text.strip()}")
    assert not bare, "a `type: ignore[code]` needs `# reason` after it:\n" + "\n".join(bare)


@pytest.mark.parametrize(
    ("line", "bare"),
    [
        ("x = f()  # type: ignore", True),
        ("x = f()  # type: ignore[attr-defined]", True),
        ("x = f()  # type: ignore[attr-defined]  # set by the C extension", False),
        ("x = f()  # type: ignore[attr-defined] - set by the C extension", False),
    ],
)
def test_the_ignore_check_tells_bare_from_explained(line: str, bare: bool) -> None:
    found = IGNORE.search(line)
    assert found is not None
    reason = found["rest"].strip().lstrip("#").strip()
    assert (not found["codes"] or not reason) is bare
