"""Requirement gating of the contract suite, and the suite's command-line settings.

Each contract test is marked with what it needs from a kind (``@requires("priority")``,
``@requires(broadcast=False)``, ``@requires(queue_size=("exact", "approximate"))``). The pytest plugin
evaluates the marks *at collection* against the ``Capabilities`` of the kind under test and marks a test
whose requirements are not met as skipped, with the reason (``pytest -rs`` lists them): a certification
report then shows what was not certified and why, instead of hiding it (deselection would).
"""
from __future__ import annotations

import importlib
import inspect
import json
from typing import Any, Callable, Optional, TypeVar

import pytest

from funboost.plugins.broker import Broker
from funboost.plugins.manager import get_broker_registry

MARK = "funboost_requires"
# contract tests that never publish: the only ones that apply to a source_only kind
NO_PUBLISH_MARK = "funboost_no_publish"
T = TypeVar("T")


def requires(*flags: str, **values: Any) -> Callable[[T], T]:
    """Mark a contract test, or every test of a mixin class, as needing capabilities.

    ``flags``: capability names that must be true. ``values``: ``name=value`` (equal) or
    ``name=(v1, v2)`` (one of). Names are fields of ``Capabilities`` or class attributes of the broker
    (``accepts_payload``, ``poll_while_busy``).

    On a class the mark goes onto each of its own ``test_*`` methods, not onto the class: pytest merges
    class marks along the MRO, so a class mark of one mixin would gate every test of ``BrokerContract``.
    """
    mark = getattr(pytest.mark, MARK)(*flags, **values)
    return lambda obj: _mark_tests(obj, mark)


def _mark_tests(obj: T, mark: Any) -> T:
    """``mark`` on a test function, or on every test method a class defines itself (not along the MRO)."""
    if inspect.isclass(obj):
        for name, member in list(vars(obj).items()):
            if name.startswith("test") and callable(member):
                setattr(obj, name, mark(member))
        return obj
    return mark(obj)


def publishes_nothing(obj: T) -> T:
    """Mark a contract test, or every test of a mixin class, as one that never publishes: it also runs
    for ``source_only`` kinds (whose publish() refuses new messages), which skip every other test."""
    return _mark_tests(obj, getattr(pytest.mark, NO_PUBLISH_MARK))


def source_only_skip(broker_cls: type[Broker], item: Any) -> Optional[str]:
    """A skip reason for a test that publishes when ``broker_cls`` is ``source_only``, else ``None``."""
    if broker_cls.capabilities.source_only and item.get_closest_marker(NO_PUBLISH_MARK) is None:
        return (f"{broker_cls.kind} declares source_only=True: its messages come from an outside source "
                f"and publish() refuses new ones, so only the tests that publish nothing apply")
    return None


def unmet_requirements(broker_cls: type[Broker], flags: tuple, values: dict) -> Optional[str]:
    """A skip reason if ``broker_cls`` does not meet the requirements, else ``None``."""
    caps = broker_cls.capabilities

    def get(name: str) -> Any:
        if hasattr(caps, name):
            return getattr(caps, name)
        if hasattr(broker_cls, name):
            return getattr(broker_cls, name)
        raise pytest.UsageError(f"contract requirement names unknown capability {name!r}")
    for name in flags:
        if not get(name):
            return f"{broker_cls.kind} does not declare {name}"
    for name, wanted in values.items():
        have = get(name)
        allowed = wanted if isinstance(wanted, tuple) else (wanted,)
        if have not in allowed:
            shown = wanted if isinstance(wanted, tuple) else repr(wanted)
            return f"{broker_cls.kind} declares {name}={have!r} (test needs {shown})"
    return None


def load_broker_class(spec: str) -> type[Broker]:
    """A broker kind name (``redis_ack_able``), or ``package.module:Class`` for a class that is not
    installed as an entry point (it is registered in this process)."""
    registry = get_broker_registry()
    if ":" not in spec:
        return registry.resolve(spec)
    module, _, attr = spec.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    registry.register(cls)
    return cls


def parse_key_values(items: Optional[list[str]], option: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values are JSON when they parse as JSON)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise pytest.UsageError(f"{option} expects KEY=VALUE, got {item!r}")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out[key.strip()] = value
    return out


SETTING_NAMES = ("redelivery_timeout", "consumer_ready_timeout", "long_task_seconds", "requeue_timeout")


def contract_settings(config: Any, section: str = "settings") -> dict[str, Any]:
    """What the command line says: ``settings`` (suite timings), ``broker_options`` or
    ``reclaim_options``."""
    if section == "broker_options":
        raw = config.getoption("--funboost-broker-config", default=None)
        out = json.loads(raw) if raw else {}
        if not isinstance(out, dict):
            raise pytest.UsageError("--funboost-broker-config must be a JSON object")
        out.update(parse_key_values(config.getoption("--funboost-option", default=None), "--funboost-option"))
        return out
    if section == "reclaim_options":
        return parse_key_values(config.getoption("--funboost-reclaim-option", default=None),
                                "--funboost-reclaim-option")
    values = parse_key_values(config.getoption("--funboost-setting", default=None), "--funboost-setting")
    unknown = sorted(set(values) - set(SETTING_NAMES))
    if unknown:
        raise pytest.UsageError(f"--funboost-setting: unknown setting(s) {unknown}; known: {list(SETTING_NAMES)}")
    return {k: float(v) for k, v in values.items()}
