"""MQTT benchmark: funboost-mqtt beside raw paho-mqtt 2 doing the same work at QoS 1.

    python bench/mqtt_bench.py [--n 5000] [--n-e2e 1000] [--repeat 2]
    python bench/_call.py mqtt_bench part_fb_publish '[5000]'   # one side, as run_all.py runs it

Parts (each in a fresh child process, peak RSS beside it): the ``part_*`` functions, each measuring one side
once on a topic of its own and returning ``{"rate": msg/s, ...}``; every session they open is ended
(session expiry 0) before they return.

* publish: N QoS 1 publishes, waiting for every PUBACK, while a raw subscriber of the shared group runs
  in another process (so the PUBACK is not "no matching subscribers").
  raw = ``client.publish`` in a loop then wait for all PUBACKs; funboost = ``push_many``.
* end to end: a consumer subscribed (shared group, QoS 1, PUBACK after a no-op run, receive maximum
  64); N messages published from another thread; time from the first publish to the last run.
  raw = a paho subscriber with ``manual_ack``; funboost = ``consume()`` (50 threads) + ``push_many``.

End to end uses N = 1000 by default: Mosquitto's default ``max_queued_messages`` (1000 per client beyond
the in-flight window) drops QoS 1 messages for a consumer that falls further behind (a raw paho consumer
with 5000 lost ~700 here); a part that does not see all N reports the loss.
Needs an MQTT 5 broker with shared subscriptions at FUNBOOST_MQTT_HOST:FUNBOOST_MQTT_PORT.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Iterator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (RunCounter, compare_raw_and_funboost, machine_info, noop_booster,  # noqa: E402
                     part_functions, report_and_exit)

HOST = os.environ.get("FUNBOOST_MQTT_HOST", "127.0.0.1")
PORT = int(os.environ.get("FUNBOOST_MQTT_PORT", "1883"))
BODY = json.dumps({"x": 1, "extra": {"task_id": "t" * 32, "publish_time": 1.0}}).encode()
GROUP = "funboost"  # the MQTT kind's default shared group


def _client(client_id: str, manual_ack: bool = False, session_expiry: int = 0, receive_maximum: int = 0) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect(HOST, PORT, 30, clean_start=session_expiry == 0, properties=props)
    c.loop_start()
    connected.wait(10)
    return c


def _end(c: Any) -> None:
    """Disconnect and drop the session on the broker (a persistent one would otherwise outlive the part)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    props = Properties(PacketTypes.DISCONNECT)
    props.SessionExpiryInterval = 0
    c.disconnect(properties=props)
    c.loop_stop()


SINK = """
import sys, threading
sys.path.insert(0, %r)
from mqtt_bench import _client, GROUP
topic = sys.argv[1]
c = _client("bench-sink-" + topic.rsplit("_", 1)[-1])
ready = threading.Event()
c.on_subscribe = lambda *a: ready.set()
c.subscribe("$share/%%s/%%s" %% (GROUP, topic), qos=1)
ready.wait(10)
print("ready", flush=True)
sys.stdin.read()
""" % os.path.dirname(os.path.abspath(__file__))


@contextlib.contextmanager
def _sink(topic: str) -> Iterator[None]:
    """A live subscriber of the shared group in its own process (QoS 1, acknowledged on receipt), so
    that the broker routes and acknowledges every publish the same way in both parts."""
    p = subprocess.Popen([sys.executable, "-c", SINK, topic], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready", "the sink did not subscribe"
        yield
    finally:
        p.kill()  # its session has expiry 0: nothing stays on the broker
        p.wait()


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def part_raw_publish(n: int) -> dict[str, Any]:
    topic = f"funboost/bench_{_uid()}"
    acked = [0]
    all_acked = threading.Event()

    def on_publish(*a: Any) -> None:
        acked[0] += 1
        if acked[0] >= n:
            all_acked.set()
    with _sink(topic):
        c = _client(f"bench-pub-{_uid()}")
        c.on_publish = on_publish
        t = time.perf_counter()
        for _ in range(n):
            c.publish(topic, BODY, qos=1)
        ok = all_acked.wait(300)
        dt = time.perf_counter() - t
        _end(c)
    return {"rate": n / dt if ok else None, "received": acked[0]}


def _booster(queue: str, counter: RunCounter) -> Any:
    return noop_booster("MQTT", queue, {"host": HOST, "port": PORT}, 50, counter)


def part_fb_publish(n: int) -> dict[str, Any]:
    task = _booster(f"bench_{_uid()}", RunCounter(n))
    with _sink(task.broker.topic):
        task.push(0)  # the publishing client is connected before timing, as in the raw part
        t = time.perf_counter()
        task.push_many(range(n))
        dt = time.perf_counter() - t
    return {"rate": n / dt}


def part_raw_e2e(n: int) -> dict[str, Any]:
    topic = f"funboost/bench_{_uid()}"
    sub = _client(f"bench-sub-{_uid()}", manual_ack=True, session_expiry=300, receive_maximum=64)
    got = [0]
    done = threading.Event()

    def on_message(c, u, msg) -> None:
        json.loads(msg.payload)  # the same decode a task gets
        c.ack(msg.mid, msg.qos)
        got[0] += 1
        if got[0] >= n:
            done.set()
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.subscribe(f"$share/{GROUP}/{topic}", qos=1)
    subscribed.wait(10)
    pub = _client(f"bench-pub-{_uid()}")
    t = time.perf_counter()
    threading.Thread(target=lambda: [pub.publish(topic, BODY, qos=1) for _ in range(n)], daemon=True).start()
    ok = done.wait(120)
    dt = time.perf_counter() - t
    for c in (sub, pub):
        _end(c)
    return {"rate": n / dt if ok else None, "received": got[0]}


def part_fb_e2e(n: int) -> dict[str, Any]:
    counter = RunCounter(n)
    task = _booster(f"bench_{_uid()}", counter)
    task.consume()
    t = time.perf_counter()
    threading.Thread(target=lambda: task.push_many(range(n)), daemon=True).start()
    ok = counter.wait(120)
    dt = time.perf_counter() - t
    task.stop_consume(10)  # unsubscribes and ends the consumer's persistent session
    return {"rate": n / dt if ok else None, "received": counter.n}


PARTS = part_functions(globals())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--n-e2e", type=int, default=1000,
                    help="end-to-end messages; above ~1000 Mosquitto's max_queued_messages drops QoS 1 messages "
                         "for a consumer that falls behind")
    ap.add_argument("--repeat", type=int, default=2)
    a, rest = ap.parse_known_args()
    if a.part:
        return report_and_exit(PARTS[a.part], int(rest[0]) if rest else a.n)
    print(f"# mqtt_bench: N={a.n} (publish), {a.n_e2e} (end to end), {machine_info()}")
    compare_raw_and_funboost(__file__, (("QoS 1 publish (all PUBACKs)", "raw_publish", "fb_publish", a.n),
                                        ("QoS 1 end to end (PUBACK after the run)", "raw_e2e", "fb_e2e", a.n_e2e)),
                             a.repeat, "raw paho", ("received", "arrived (the broker dropped the rest)"))


if __name__ == "__main__":
    main()
