"""``publish_mode`` (funboost.publishing) on a kind that declares ``Capabilities.pipelined_publish``: its
batch publish, driven by the pipelined publisher and by group commit, delivers every message exactly once.
Kinds without the capability only ever publish in the default confirmed mode, which every other module
of the suite covers."""
from __future__ import annotations

import threading

from funboost.publishing import GroupCommit, PipelinedPublisher
from funboost.testing.contract.base import ContractBase, body_x, fetch_until
from funboost.testing.requirements import requires


@requires("pipelined_publish")
class PublishModeTests:
    def test_pipelined_publisher_delivers_on_flush(self, broker, message, settings):
        broker.fetch(1, 0.05)  # consumer-group kinds: join before publishing
        pub = PipelinedPublisher(broker.publish, broker.queue_name, window=60.0)  # only flush() sends
        try:
            for i in range(30):
                pub.publish([message(i)])
            pub.flush(timeout=60)
            assert pub.stats == {"pushed": 30, "confirmed": 30, "failed": 0, "pending": 0}, (
                f"pipelined_publish: after flush() the pipelined publisher reports {pub.stats} for 30 messages "
                f"(all 30 confirmed expected)")
            got = fetch_until(broker, 30, timeout=settings["consumer_ready_timeout"] + 20)
            xs = sorted(body_x(d) for d in got)
            assert xs == list(range(30)), (f"pipelined_publish: 30 messages published pipelined (0..29) were "
                                           f"fetched as {xs}")
            broker.ack(got)
        finally:
            pub.close(timeout=60)

    def test_group_commit_from_threads_delivers_each_once(self, broker, message, settings):
        broker.fetch(1, 0.05)
        gc = GroupCommit(broker.publish)
        errors: list[BaseException] = []

        def worker(t: int) -> None:
            try:
                for i in range(10):
                    gc.publish([message(t * 100 + i)])
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert not errors, f"pipelined_publish: publish() through group commit from 4 threads raised: {errors}"
        got = fetch_until(broker, 40, timeout=settings["consumer_ready_timeout"] + 20)
        xs = sorted(body_x(d) for d in got)
        want = sorted(t * 100 + i for t in range(4) for i in range(10))
        assert xs == want, (f"pipelined_publish: 40 messages published by 4 threads through group commit were "
                            f"fetched as {xs} (each exactly once expected: {want})")
        broker.ack(got)
        extra = broker.fetch(5, 0.3)
        assert extra == [], (f"pipelined_publish: group commit delivered messages more than once: "
                             f"{[body_x(d) for d in extra]}")


class TestPublishMode(PublishModeTests, ContractBase):
    pass
