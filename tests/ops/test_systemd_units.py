"""The shipped systemd units pass ``systemd-analyze verify`` (SPEC §6, §11; issue 12).

Each test verifies a copy of ``systemd/app-server.service`` and
``systemd/app-server.socket`` whose paths point at what exists here (verify
checks that ``ExecStart=`` and ``ExecReload=`` executables exist): this
virtualenv's ``app-server`` and a temporary working directory. The shipped
``Type=notify`` unit is checked wherever systemd-analyze exists; the
``Type=notify-reload`` variant of docs/systemd.md only on systemd 253 and
later, which introduced it. Also checked: the unit's timeouts agree with the
server's defaults, and the reload command is the one SPEC §11 names.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app_server.settings.schema import BY_NAME

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "systemd" / "app-server.service"
SOCKET = ROOT / "systemd" / "app-server.socket"
SHIPPED_BIN = "/opt/app/venv/bin/app-server"
ANALYZE = shutil.which("systemd-analyze")


def systemd_version() -> int:
    out = subprocess.run(
        ["systemctl", "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.match(r"systemd (\d+)", out)
    assert match, out
    return int(match.group(1))


def directives(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            found[key] = value
    return found


def local_copy(tmp_path: Path, service_text: str) -> Path:
    app_server = Path(sys.executable).parent / "app-server"
    assert app_server.exists(), app_server
    assert SHIPPED_BIN in service_text
    text = service_text.replace(SHIPPED_BIN, str(app_server))
    text = text.replace("WorkingDirectory=/opt/app", f"WorkingDirectory={tmp_path}")
    units = tmp_path / "units"
    units.mkdir()
    (units / "app-server.service").write_text(text)
    shutil.copy(SOCKET, units / "app-server.socket")
    return units


def verify(units: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [
            ANALYZE,
            "verify",
            "--man=no",
            str(units / "app-server.service"),
            str(units / "app-server.socket"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def test_service_works_on_systemd_252() -> None:
    unit = directives(SERVICE.read_text())
    assert unit["Type"] == "notify"
    assert unit["ExecReload"] == f"{SHIPPED_BIN} ctl reload --wait"
    assert unit["RuntimeDirectory"] == "app-server"  # the control socket's default place
    assert unit["NotifyAccess"] == "main"
    assert "ReloadSignal" not in unit


def test_stop_timeouts_agree_with_the_graceful_timeout() -> None:
    unit = directives(SERVICE.read_text())
    graceful = float(BY_NAME["graceful_timeout"].default)  # type: ignore[arg-type]
    heartbeat = float(BY_NAME["timeout"].default)  # type: ignore[arg-type]
    assert unit["KillMode"] == "mixed"  # TERM to the master only; it drains its workers
    assert unit["KillSignal"] == "SIGTERM"
    assert float(unit["TimeoutStopSec"]) > graceful
    assert float(unit["WatchdogSec"]) > heartbeat
    for hardening in (
        "NoNewPrivileges",
        "ProtectSystem",
        "PrivateTmp",
        "SystemCallFilter",
        "RestrictAddressFamilies",
        "CapabilityBoundingSet",
    ):
        assert hardening in unit


@needs_analyze
def test_systemd_analyze_verify_passes_on_the_notify_unit(tmp_path: Path) -> None:
    result = verify(local_copy(tmp_path, SERVICE.read_text()))
    assert result.returncode == 0, result.stderr
    assert "app-server" not in result.stderr, result.stderr  # no warning about our units


@needs_analyze
def test_systemd_analyze_verify_passes_on_the_notify_reload_variant(tmp_path: Path) -> None:
    version = systemd_version()
    if version < 253:
        pytest.skip(f"Type=notify-reload needs systemd 253 or later; this is {version}")
    text = SERVICE.read_text()
    text = re.sub(r"^Type=notify$", "Type=notify-reload\nReloadSignal=SIGHUP", text, flags=re.M)
    text = re.sub(r"^ExecReload=.*\n", "", text, flags=re.M)
    assert directives(text)["Type"] == "notify-reload" and "ExecReload" not in directives(text)
    result = verify(local_copy(tmp_path, text))
    assert result.returncode == 0, result.stderr
    assert "app-server" not in result.stderr, result.stderr
