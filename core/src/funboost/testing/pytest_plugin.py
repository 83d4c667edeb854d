"""pytest plugin of funboost-core (registered through the ``pytest11`` entry point).

It adds the contract suite's command-line options and, for contract tests only (classes derived from
``funboost.testing.contract.ContractBase``): requirement gating at collection, a per-test timeout and a
private data folder. Projects that do not use the contract suite are not affected.

Options (all optional except the kind when running ``--pyargs funboost.testing.contract``):

``--funboost-broker KIND``               kind name, or ``package.module:BrokerClass`` (not installed yet)
``--funboost-broker-config JSON``        broker_exclusive_config as a JSON object
``--funboost-option KEY=VALUE``          one broker option (repeatable; VALUE is JSON if it parses)
``--funboost-reclaim-option KEY=VALUE``  broker option for the crash/lease tests only, to make a dead
                                         consumer noticed quickly (e.g. ``heartbeat_timeout=1``)
``--funboost-setting NAME=SECONDS``      suite timing: redelivery_timeout, consumer_ready_timeout,
                                         long_task_seconds, requeue_timeout
``--funboost-test-timeout SECONDS``      per-test timeout (default 180; 0 turns it off)
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from typing import Any, Optional

import pytest

DEFAULT_TEST_TIMEOUT = 180.0
_DATA_DIR_ENV = "FUNBOOST_DATA_DIR"


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("funboost", "funboost broker contract suite")
    group.addoption("--funboost-broker", action="store", default=None, metavar="KIND",
                    help="broker kind certified by 'pytest --pyargs funboost.testing.contract' "
                         "(or package.module:BrokerClass)")
    group.addoption("--funboost-broker-config", action="store", default=None, metavar="JSON",
                    help="broker_exclusive_config (JSON object) for the contract suite; connection settings "
                         "otherwise come from the plugin's environment variables")
    group.addoption("--funboost-option", action="append", default=None, metavar="KEY=VALUE",
                    help="one broker option for the contract suite (repeatable)")
    group.addoption("--funboost-reclaim-option", action="append", default=None, metavar="KEY=VALUE",
                    help="broker option used only by the crash-redelivery and lease tests, so that a dead "
                         "consumer is noticed quickly, e.g. heartbeat_timeout=1 (repeatable)")
    group.addoption("--funboost-setting", action="append", default=None, metavar="NAME=SECONDS",
                    help="contract suite timing: redelivery_timeout, consumer_ready_timeout, "
                         "long_task_seconds, requeue_timeout (repeatable)")
    group.addoption("--funboost-test-timeout", action="store", type=float, default=DEFAULT_TEST_TIMEOUT,
                    metavar="SECONDS", help="per-test timeout of contract tests (0: none)")


def _is_contract_item(item: Any) -> bool:
    cls = getattr(item, "cls", None)
    if cls is None:
        return False
    from funboost.testing.contract.base import ContractBase
    return issubclass(cls, ContractBase)


def pytest_collection_modifyitems(session: Any, config: Any, items: list) -> None:
    """Gate contract tests by the capabilities of the kind under test (skipped, with the reason)."""
    contract_items = [i for i in items if _is_contract_item(i)]
    if not contract_items:
        return
    from funboost.testing.requirements import MARK, load_broker_class, source_only_skip, unmet_requirements
    _use_private_data_dir(config)
    cli_kind = config.getoption("--funboost-broker", default=None)
    classes: dict[str, Any] = {}
    for item in contract_items:
        kind = getattr(item.cls, "broker_kind", "") or cli_kind
        if not kind:
            item.add_marker(pytest.mark.skip(reason="no broker kind given (use --funboost-broker KIND)"))
            continue
        if kind not in classes:
            try:
                classes[kind] = load_broker_class(kind)
            except Exception as exc:
                raise pytest.UsageError(f"--funboost-broker {kind!r}: {type(exc).__name__}: {exc}") from exc
        reason = source_only_skip(classes[kind], item)
        for mark in item.iter_markers(MARK):
            if reason:
                break
            reason = unmet_requirements(classes[kind], mark.args, mark.kwargs)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def _use_private_data_dir(config: Any) -> None:
    """Queue folders and state databases of a contract run go to a temporary folder, removed at exit."""
    if getattr(config, "_funboost_data_dir", None):
        return
    path = tempfile.mkdtemp(prefix="funboost-contract-")
    config._funboost_data_dir = (path, os.environ.get(_DATA_DIR_ENV))
    os.environ[_DATA_DIR_ENV] = path  # inherited by the subprocesses of the crash tests


def pytest_unconfigure(config: Any) -> None:
    _stop_leftover_consumers()
    saved = getattr(config, "_funboost_data_dir", None)
    if not saved:
        return
    path, previous = saved
    if previous is None:
        os.environ.pop(_DATA_DIR_ENV, None)
    else:
        os.environ[_DATA_DIR_ENV] = previous
    shutil.rmtree(path, ignore_errors=True)


class ContractTestTimeout(AssertionError):
    """A contract test ran longer than --funboost-test-timeout."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: Any, nextitem: Any):
    """Per-test timeout for contract tests: SIGALRM raises in the test (setup, call and teardown), so a
    broker that loses or withholds messages fails that test instead of hanging the run. Where SIGALRM is
    missing (Windows) or pytest does not run in the main thread, there is no per-test timeout; the
    suite's own deadlines still apply."""
    timeout = float(item.config.getoption("--funboost-test-timeout", default=DEFAULT_TEST_TIMEOUT) or 0)
    armed = (timeout > 0 and hasattr(signal, "SIGALRM") and _is_contract_item(item)
             and threading.current_thread() is threading.main_thread())
    previous: Optional[Any] = None
    if armed:
        def on_alarm(signum: int, frame: Any) -> None:
            raise ContractTestTimeout(f"contract test exceeded --funboost-test-timeout={timeout:g}s")
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield
    finally:
        if armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)



def _stop_leftover_consumers() -> None:
    """A test that left a consumer running must not keep the test process alive: at exit funboost waits
    while something consumes (see funboost.keepalive), so stop what is left, briefly."""
    import sys
    if "funboost.booster" not in sys.modules:
        return
    from funboost.keepalive import stop_all_consumers
    stop_all_consumers(timeout=5)
