"""Entry-point discovery, validation against the hookspecs, broken plugins, and the CLI."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from funboost import Broker, Capabilities
from funboost.exceptions import BrokerPluginError
from funboost.plugins.manager import validate_broker_class


def _make_dist(tmp_path, name, entry_points, module_name=None, module_src=None):
    """An installed distribution made of a .dist-info folder on sys.path (how pip installs one)."""
    dist = tmp_path / f"{name.replace('-', '_')}-0.0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
    (dist / "entry_points.txt").write_text(entry_points)
    if module_name:
        (tmp_path / f"{module_name}.py").write_text(module_src)
    return tmp_path


def _run(tmp_path, code):
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=60)


def test_broken_plugin_names_its_distribution_and_does_not_affect_others(tmp_path):
    _make_dist(tmp_path, "funboost-broken", "[funboost.brokers]\nbroken = broken_plugin_mod:Nope\n",
               "broken_plugin_mod", "raise ImportError('the client library is missing')\n")
    r = _run(tmp_path, """
        from funboost import BoosterParams
        try:
            BoosterParams(queue_name="q", broker_kind="broken")
        except Exception as e:
            print("ERR", e)
        p = BoosterParams(queue_name="q", broker_kind="memory")
        print("OK", p.broker_class().kind)
    """)
    assert "funboost-broken" in r.stdout and "failed to import" in r.stdout, r.stdout + r.stderr
    assert "the client library is missing" in r.stdout
    assert "OK memory" in r.stdout


def test_third_party_plugin_module_registering_several_kinds(tmp_path):
    src = textwrap.dedent("""
        from funboost.brokers.memory import MemoryBroker
        class AlphaBroker(MemoryBroker):
            kind = "alpha"
            aliases = ()
        class BetaBroker(MemoryBroker):
            kind = "beta"
            aliases = ("beta_two",)
        def funboost_register_brokers(registry):
            registry.register(AlphaBroker)
            registry.register(BetaBroker)
    """)
    _make_dist(tmp_path, "funboost-alphabeta", "[funboost.brokers]\nalpha = ab_mod\nbeta = ab_mod\nbeta_two = ab_mod\n",
               "ab_mod", src)
    r = _run(tmp_path, """
        import json
        from funboost.plugins.manager import resolve_broker_kind, get_broker_registry
        print(resolve_broker_kind("ALPHA").kind, resolve_broker_kind("Beta_Two").kind)
        print(json.dumps(sorted(i.kind for i in get_broker_registry().installed())))
        print(resolve_broker_kind("alpha").distribution)
    """)
    lines = r.stdout.splitlines()
    assert lines[0] == "alpha beta", r.stdout + r.stderr
    assert "alpha" in lines[1] and "beta" in lines[1] and "memory" in lines[1]
    assert lines[2] == "funboost-alphabeta"


def test_broker_class_must_match_hookspec_argument_names():
    class Wrong(Broker):
        kind = "wrong"
        capabilities = Capabilities()

        def fetch(self, count, timeout):  # 'count' is not the spec's 'max_count'
            return []

    with pytest.raises(BrokerPluginError, match="fetch"):
        validate_broker_class(Wrong)

    class NoKind(Broker):
        pass

    with pytest.raises(BrokerPluginError, match="kind"):
        validate_broker_class(NoKind)


def test_broker_class_missing_a_required_method_is_refused_at_registration():
    """ack left to Broker's (it raises NotImplementedError): refused with the method named, instead of a
    consumer that logs 'ack failed ()' forever."""
    from funboost.brokers.memory import MemoryBroker

    class NoAck(MemoryBroker):
        kind = "no_ack"
        ack = Broker.ack

    with pytest.raises(BrokerPluginError, match=r"does not implement \['ack'\]"):
        validate_broker_class(NoAck)

    class NoPurge(MemoryBroker):  # purge is required only of kinds that declare it
        kind = "no_purge"
        purge = Broker.purge

    with pytest.raises(BrokerPluginError, match="purge"):
        validate_broker_class(NoPurge)
    import dataclasses
    NoPurge.capabilities = dataclasses.replace(MemoryBroker.capabilities, purge=False)
    validate_broker_class(NoPurge)


def test_a_plugin_cannot_take_over_another_distributions_kind_name(tmp_path):
    src = textwrap.dedent("""
        from funboost.brokers.memory import MemoryBroker
        class Greedy(MemoryBroker):
            kind = "greedy"
            aliases = ("memory",)
    """)
    _make_dist(tmp_path, "funboost-greedy", "[funboost.brokers]\ngreedy = greedy_mod:Greedy\n", "greedy_mod", src)
    r = _run(tmp_path, """
        from funboost.plugins.manager import resolve_broker_kind
        print("before", resolve_broker_kind("memory").__name__)
        try:
            resolve_broker_kind("greedy")
        except Exception as e:
            print("ERR", e)
        print("after", resolve_broker_kind("memory").__name__)
    """)
    assert "before MemoryBroker" in r.stdout and "after MemoryBroker" in r.stdout, r.stdout + r.stderr
    assert "'memory'" in r.stdout and "funboost-greedy" in r.stdout and "funboost-core" in r.stdout, r.stdout


def test_two_distributions_declaring_one_kind_name_is_an_error_naming_both(tmp_path):
    for dist, mod in (("funboost-one", "one_mod"), ("funboost-two", "two_mod")):
        sub = tmp_path / dist
        sub.mkdir()
        _make_dist(sub, dist, f"[funboost.brokers]\nsame_kind = {mod}:B\n", mod,
                   "from funboost.brokers.memory import MemoryBroker\n"
                   "class B(MemoryBroker):\n    kind = 'same_kind'\n    aliases = ()\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'funboost-one'}{os.pathsep}{tmp_path / 'funboost-two'}"}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        from funboost.plugins.manager import resolve_broker_kind
        try:
            resolve_broker_kind("same_kind")
        except Exception as e:
            print("ERR", e)
    """)], capture_output=True, text=True, env=env, timeout=60)
    assert "ERR" in r.stdout and "funboost-one" in r.stdout and "funboost-two" in r.stdout, r.stdout + r.stderr


def test_a_misspelt_hook_of_a_plugin_is_reported(tmp_path):
    src = textwrap.dedent("""
        import funboost
        @funboost.hookimpl
        def funboost_befor_publish(queue_name, message):
            pass
    """)
    _make_dist(tmp_path, "funboost-typo", "[funboost.plugins]\ntypo = typo_mod\n", "typo_mod", src)
    r = _run(tmp_path, """
        import logging
        logging.basicConfig(level=logging.ERROR)
        from funboost.plugins.manager import get_plugin_manager
        get_plugin_manager()
    """)
    assert "funboost_befor_publish" in r.stderr and "funboost-typo" in r.stderr, r.stderr


def test_cli_brokers_json_lists_memory_with_capabilities():
    r = subprocess.run([sys.executable, "-m", "funboost", "brokers", "--json"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    mem = [d for d in data if d["kind"] == "memory"][0]
    assert mem["distribution"] == "funboost-core"
    assert "memory_queue" in mem["aliases"]
    assert mem["capabilities"]["at_least_once"] is False
    r2 = subprocess.run([sys.executable, "-m", "funboost", "brokers"], capture_output=True, text=True, timeout=60)
    assert "memory" in r2.stdout and "funboost-core" in r2.stdout
