"""The contract suite's self-test: it must FAIL every deliberately broken broker variant
(funboost.testing.broken_brokers), each on the test that names its defect, and pass the correct ones
(``CONTROLS``); each failure must say what the broker did wrong."""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from funboost.testing.broken_brokers import CONTROLS, EXPECTED_FAILURES


def run_suite(tmp_path, broker: str, tests: list[str], messages: "dict[str, str] | None" = None) -> dict[str, str]:
    """Run the selected contract tests on ``broker`` in a fresh pytest; {test id: outcome} (and the failure
    messages into ``messages``)."""
    modules = sorted({t.split("::")[0][:-3] for t in tests})
    names = " or ".join(t.rsplit("::", 1)[1] for t in tests)
    xml = tmp_path / "report.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--funboost-broker", broker,
           "--junitxml", str(xml), "-k", names, "--pyargs", *[f"funboost.testing.contract.{m}" for m in modules]]
    env = {**os.environ, "FUNBOOST_LOG_TO_CONSOLE": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert xml.exists(), proc.stdout + proc.stderr
    outcomes = junit_outcomes(xml, messages)
    assert outcomes, proc.stdout + proc.stderr
    return outcomes


def junit_outcomes(xml, messages: "dict[str, str] | None" = None) -> dict[str, str]:
    """{"TestClass::test_name": "passed" | "failed" | "skipped"} of a junit XML report (and the message of
    each failure into ``messages``)."""
    outcomes: dict[str, str] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        children = {child.tag for child in case}
        outcome = "failed" if children & {"failure", "error"} else "skipped" if "skipped" in children else "passed"
        outcomes[test_id] = outcome
        if messages is not None:
            for child in case:
                if child.tag in ("failure", "error"):
                    messages[test_id] = child.get("message", "")
    return outcomes


def _short(test: str) -> str:
    return test.split("::", 1)[1]  # "TestAck::test_x"


@pytest.mark.parametrize("variant", sorted(EXPECTED_FAILURES))
def test_suite_fails_the_broken_broker(tmp_path, variant):
    tests = EXPECTED_FAILURES[variant]
    messages: dict[str, str] = {}
    outcomes = run_suite(tmp_path, f"funboost.testing.broken_brokers:{variant}", tests, messages)
    for test in tests:
        assert outcomes.get(_short(test)) == "failed", f"{variant}: {test} did not fail: {outcomes}"
        # what the broker did wrong, not a bare comparison ("assert 1 == 2")
        message = messages.get(_short(test), "")
        assert message and not message.startswith("assert "), f"{variant}: {test} failed without saying why: {message}"


@pytest.mark.parametrize("control", CONTROLS)
def test_same_tests_pass_on_the_real_brokers(tmp_path, control):
    """The controls: what fails for the broken variants passes (or is gated out) for MemoryBroker and for
    the correct lease-based broker the lease variants derive from."""
    tests = sorted({t for ts in EXPECTED_FAILURES.values() for t in ts})
    outcomes = run_suite(tmp_path, control, tests)
    assert "failed" not in outcomes.values(), outcomes
    assert list(outcomes.values()).count("passed") >= 6, outcomes
    # the tests added for the two variants that only misbehave under concurrency or after a reclaim
    if control.endswith(":LeaseBroker"):
        for test in EXPECTED_FAILURES["NoOpAckLeaseBroker"] + EXPECTED_FAILURES["RacyClaimBroker"]:
            assert outcomes.get(_short(test)) == "passed", (test, outcomes)


SOURCE_ONLY_BROKER = '''
import dataclasses
from funboost.brokers.memory import MemoryBroker

class SourceOnlyBroker(MemoryBroker):
    kind = "selftest_source_only"
    aliases = ()
    capabilities = dataclasses.replace(MemoryBroker.capabilities, source_only=True)

    def publish(self, messages):
        raise RuntimeError("a source_only kind refuses new messages")
'''


def test_source_only_kind_runs_only_the_tests_that_publish_nothing(tmp_path):
    """A kind whose messages come from an outside source (mysql_cdc) certifies with the whole suite: every
    test that publishes is skipped with the reason, the registration tests run."""
    (tmp_path / "selftest_source_only.py").write_text(SOURCE_ONLY_BROKER)
    xml = tmp_path / "report.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "--rootdir", str(tmp_path),
           "--funboost-broker", "selftest_source_only:SourceOnlyBroker", "--junitxml", str(xml),
           "--pyargs", "funboost.testing.contract"]
    env = {**os.environ, "FUNBOOST_LOG_TO_CONSOLE": "0", "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outcomes = junit_outcomes(xml)
    passed = sorted(t for t, o in outcomes.items() if o == "passed")
    assert passed and all(t.startswith("TestRegistration::") for t in passed), outcomes
    assert "failed" not in outcomes.values(), outcomes
    assert "source_only=True" in proc.stdout
