"""pytest plugin (registered through the ``pytest11`` entry point). It only adds options; nothing runs
unless a test module uses the contract suite, so it is inert in projects that do not."""
from __future__ import annotations


def pytest_addoption(parser) -> None:
    group = parser.getgroup("funboost")
    group.addoption("--funboost-broker", action="store", default=None, metavar="KIND",
                    help="broker kind certified by 'pytest --pyargs funboost.testing.contract'")
    group.addoption("--funboost-broker-config", action="store", default=None, metavar="JSON",
                    help="broker_exclusive_config (JSON object) for the contract suite; connection settings "
                         "otherwise come from the plugin's environment variables")


def pytest_unconfigure(config) -> None:
    """A test that left a consumer running must not keep the test process alive: at exit funboost waits
    while something consumes (see funboost.keepalive), so stop what is left, briefly."""
    import sys
    if "funboost.booster" not in sys.modules:
        return
    from funboost.keepalive import stop_all_consumers
    stop_all_consumers(timeout=5)
