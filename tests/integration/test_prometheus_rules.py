"""promtool accepts both Prometheus configs and the rules, and the rules' unit tests pass.

Also checks what promtool does not: every alert carries the annotations ops rely on, links a
runbook section that exists in docs/operations.md, and is covered by a firing and a quiet case.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.services import REPO

PROM_DIR = REPO / "deploy" / "prometheus"
RULES = PROM_DIR / "rules" / "cxsignals.rules.yml"
RULE_TESTS = PROM_DIR / "tests" / "cxsignals.rules.test.yml"
OPERATIONS_DOC = REPO / "docs" / "operations.md"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists()
                                         else None)
    if found is None:
        pytest.fail("promtool is not installed (Debian: apt-get install prometheus)", pytrace=False)
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=120, check=False, cwd=REPO
    )


@pytest.mark.parametrize("config", ["prometheus.native.yml", "prometheus.compose.yml"])
def test_promtool_check_config(promtool: str, config: str) -> None:
    result = _run(promtool, "check", "config", str(PROM_DIR / config))
    assert result.returncode == 0, result.stdout + result.stderr
    # The config must load the rules, not just parse: promtool reports the rule files it found.
    assert "SUCCESS: 1 rule files found" in result.stdout, result.stdout


def test_promtool_check_rules(promtool: str) -> None:
    result = _run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules(promtool: str) -> None:
    result = _run(promtool, "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _alerts() -> list[dict[str, object]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_summary_description_and_an_existing_runbook() -> None:
    alerts = _alerts()
    assert len(alerts) >= 5
    doc = OPERATIONS_DOC.read_text(encoding="utf-8")
    # GitHub-style anchors of the doc's headings.
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+\s+(.+)$", doc, re.MULTILINE)
    }
    for alert in alerts:
        annotations = alert["annotations"]
        assert isinstance(annotations, dict)
        for key in ("summary", "description", "runbook"):
            assert str(annotations.get(key, "")).strip(), f"{alert['alert']}: no {key}"
        link = re.search(r"docs/operations\.md#([a-z0-9-]+)", str(annotations["runbook"]))
        assert link, f"{alert['alert']}: runbook does not link docs/operations.md#<section>"
        assert link.group(1) in anchors, f"{alert['alert']}: no section #{link.group(1)}"


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for alert in _alerts():
        name = alert["alert"]
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no test where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no test where it is quiet"
