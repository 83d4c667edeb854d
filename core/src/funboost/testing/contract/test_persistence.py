"""Cross-process and persistence: messages published by another process reach this one
(``cross_process``); messages outlive every process that touched them (``persistent``) and, when the
plugin provides a ``restart_broker_server`` fixture, a restart of the server."""
from __future__ import annotations

from typing import Callable, Optional

import pytest

from funboost.testing.contract._child import run_child
from funboost.testing.contract.base import ContractBase, body_x, fetch_until
from funboost.testing.requirements import requires


@requires(broadcast=False)
class PersistenceTests:
    @pytest.fixture
    def restart_broker_server(self) -> Optional[Callable[[], None]]:
        """Override in a plugin's test class: a function that restarts the broker's server (on a
        private instance, never a shared one). ``None``: the restart test is skipped."""
        return None

    def _publish_in_child(self, kind, queue_name, options_raw) -> None:
        """A publisher only: it never serves (the consumer of a serving-consumer kind is this process)."""
        proc = run_child(kind, queue_name, options_raw, """
            from funboost.testing.contract.base import envelope
            b.publish([envelope(i) for i in range(3)])
            b.close()
            print("published", flush=True)
        """)
        assert proc.returncode == 0 and "published" in proc.stdout, (
            f"publishing 3 messages from a child process failed (exit {proc.returncode}): {proc.stdout}{proc.stderr}")

    @requires("cross_process")
    def test_message_from_another_process(self, broker_cls, kind, queue_name, options_raw, ready_broker,
                                          settings):
        self._publish_in_child(kind, queue_name, options_raw)
        try:
            got = fetch_until(ready_broker, 3, timeout=settings["consumer_ready_timeout"] + 10)
        except AssertionError as exc:
            raise AssertionError(f"cross_process: messages published by another process did not reach this one: "
                                 f"{exc}") from exc
        assert sorted(body_x(d) for d in got) == [0, 1, 2], \
            f"cross_process: messages 0..2 published by another process arrived as {sorted(body_x(d) for d in got)}"
        ready_broker.ack(got)

    @requires("persistent")
    def test_messages_outlive_the_publishing_process(self, broker_cls, kind, queue_name, options_raw,
                                                     make_broker, settings):
        """Published by a process that has exited, before any consumer existed here."""
        self._publish_in_child(kind, queue_name, options_raw)
        consumer = make_broker()
        try:
            got = fetch_until(consumer, 3, timeout=settings["consumer_ready_timeout"] + 10)
        except AssertionError as exc:
            raise AssertionError(f"persistent: messages published by a process that has exited (before any "
                                 f"consumer existed) were lost: {exc}") from exc
        assert sorted(body_x(d) for d in got) == [0, 1, 2], \
            (f"persistent=True, but messages 0..2 published by an exited process came as "
             f"{sorted(body_x(d) for d in got)}")
        consumer.ack(got)

    @requires("persistent")
    def test_messages_survive_a_server_restart(self, restart_broker_server, broker, make_broker, message,
                                               settings):
        if restart_broker_server is None:
            pytest.skip("the plugin's test class provides no restart_broker_server fixture")
        broker.publish([message(i) for i in range(3)])
        restart_broker_server()
        consumer = make_broker()
        try:
            got = fetch_until(consumer, 3, timeout=settings["consumer_ready_timeout"] + 30)
        except AssertionError as exc:
            raise AssertionError(f"persistent: messages published before a restart of the server were lost: "
                                 f"{exc}") from exc
        assert sorted(body_x(d) for d in got) == [0, 1, 2], \
            f"persistent: messages 0..2 published before a server restart came as {sorted(body_x(d) for d in got)}"
        consumer.ack(got)


class TestPersistence(PersistenceTests, ContractBase):
    pass
