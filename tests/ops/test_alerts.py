"""config/app-server-alerts.yml is valid and each alert fires when it should (issue 12).

``promtool check rules`` validates the file; ``promtool test rules`` runs
tests/ops/alerts.test.yml, where every alert is fed synthetic series that must
fire it and series that must not (short dips, other reasons, no limit set).
promtool comes from Debian's prometheus package (tests/ops/setup.sh); like
the browser test, these fail rather than skip when it is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "app-server-alerts.yml"
RULE_TESTS = Path(__file__).resolve().parent / "alerts.test.yml"
EXPECTED_ALERTS = {
    "AppServerWorkerRestartingRepeatedly",
    "AppServerReloadFailed",
    "AppServerWorkersNotReady",
    "AppServerSlowConsumerCloses",
    "AppServerChannelBackendDown",
    "AppServerWorkerNearMemoryLimit",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool is not None, "promtool is missing: run tests/ops/setup.sh"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout


def test_every_alert_fires_and_stays_silent_in_promtool_unit_tests() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(re.findall(r"^ +- alert: (\w+)$", RULES.read_text(), re.M)) == EXPECTED_ALERTS
    # Each alert has a case where it fires and one where it must not.
    cases = re.findall(r"alertname: (\w+)\n +exp_alerts:( \[\])?$", RULE_TESTS.read_text(), re.M)
    for alert in EXPECTED_ALERTS:
        silent = [empty == " []" for name, empty in cases if name == alert]
        assert False in silent, f"{alert} never shown to fire"
        assert True in silent, f"{alert} never shown silent"
