"""Do a RabbitMQ node's acks survive its SIGKILL? Raw pika, no funboost in the path.

On a private node (``funboost.testing.servers.PrivateRabbitmq``: its own ports and directories, never the
shared node), publishes N persistent messages with confirms into a durable queue, consumes and acks some of
them one by one (a short pause after each, so the queue stays busy for a few seconds), then SIGKILLs the node
at once (or after ``--idle`` seconds), restarts it and counts the ready messages: every message beyond N minus
the acked ones is an ack the node had confirmed receiving (a round trip on the consuming channel after the
last ack) and lost with the crash. docs/reliability.md ("Broker restart", RabbitMQ) quotes its output.

    python scripts/rabbitmq_ack_durability.py [--queue-type classic|quorum] [--n 2500] [--ack 700]
                                              [--pause 0.005] [--idle 0]
"""
from __future__ import annotations

import argparse
import time

import pika

from funboost.testing.servers import PrivateRabbitmq


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queue-type", choices=("classic", "quorum"), default="classic")
    ap.add_argument("--n", type=int, default=2500, help="persistent messages published (confirmed)")
    ap.add_argument("--ack", type=int, default=700, help="messages consumed and acked before the kill")
    ap.add_argument("--pause", type=float, default=0.005, help="seconds after each ack")
    ap.add_argument("--idle", type=float, default=0.0, help="seconds the queue is left idle before the kill")
    a = ap.parse_args()

    node = PrivateRabbitmq()
    node.start()
    try:
        params = pika.URLParameters(node.url)
        args = {"x-queue-type": "quorum"} if a.queue_type == "quorum" else None
        pub = pika.BlockingConnection(params).channel()
        pub.confirm_delivery()
        pub.queue_declare("ack_durability", durable=True, arguments=args)
        node.flush_metadata()  # the queue's declaration is on disk: only the acks are in question
        for i in range(a.n):
            pub.basic_publish("", "ack_durability", str(i).encode(), pika.BasicProperties(delivery_mode=2))
        con = pika.BlockingConnection(params).channel()
        con.basic_qos(prefetch_count=50)
        acked, started = 0, time.monotonic()
        for method, _, _ in con.consume("ack_durability", inactivity_timeout=10):
            if method is None:
                raise SystemExit("no message within 10 s")
            con.basic_ack(method.delivery_tag)
            acked += 1
            time.sleep(a.pause)
            if acked >= a.ack:
                break
        busy = time.monotonic() - started
        # a synchronous round trip on the consuming channel: the node has read every ack before it
        con.queue_declare("ack_durability", durable=True, passive=True, arguments=args)
        time.sleep(a.idle)
        node.kill()
        node.start()
        ch = pika.BlockingConnection(params).channel()
        counts: list[int] = []
        deadline = time.monotonic() + 60
        # until 5 counts in a row agree: a quorum queue may still be replaying its log
        while (len(counts) < 5 or len(set(counts[-5:])) > 1) and time.monotonic() < deadline:
            counts.append(ch.queue_declare("ack_durability", durable=True, passive=True,
                                           arguments=args).method.message_count)
            time.sleep(0.5)
        ready = counts[-1]
        print("ready messages, every 0.5 s after the restart:", counts)
        lost_acks = ready - (a.n - acked)
        print(f"{a.queue_type} queue: {a.n} published, {acked} acked over {busy:.1f} s, node SIGKILLed "
              f"{a.idle:g} s after the last ack; after the restart {ready} ready: {lost_acks} of the {acked} acks "
              f"lost (those messages are delivered again)")
    finally:
        node.stop()


if __name__ == "__main__":
    main()
