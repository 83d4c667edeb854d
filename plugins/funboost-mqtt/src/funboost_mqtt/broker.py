"""``MQTT``: QoS 1 work queue over a shared subscription; ``MQTT_BROADCAST``: every consumer gets every
message. paho-mqtt 2, MQTT 5 (for shared subscriptions, session expiry, receive maximum and the
"no matching subscribers" PUBACK).

* Consumers connect with ``clean_start=False`` and a session expiry (a persistent session: messages in
  flight survive a dropped connection and come again when the client reconnects), subscribe QoS 1 to
  ``$share/<group>/<topic>`` and acknowledge (PUBACK) only after the run (``manual_ack``). The broker
  sends at most ``receive_maximum`` unacknowledged messages: that is the prefetch bound.
* Publishers use one QoS 1 client per process and wait for every PUBACK. A PUBACK saying "no matching
  subscribers" means the broker dropped the message: it is parked and published again in the
  background until a consumer subscribes (for ``publish_timeout``, then dropped with an error log;
  waited for at interpreter exit), instead of vanishing.
* What is *not* guaranteed, measured on Mosquitto 2.0 (tests/test_mqtt.py): a consumer killed with
  SIGKILL keeps its session; the messages it held, and the share of new messages the broker keeps
  routing to its offline session, come back only when a client with the *same client id* reconnects,
  and are lost when the session expires. Hence ``at_least_once=False`` unless you give every consumer
  a stable ``client_id``. Messages survive a broker restart only if the broker persists sessions.
* A gracefully stopping consumer unsubscribes, republishes what it buffered and did not run, and ends
  its session.
"""
from __future__ import annotations

import atexit
import collections
import hashlib
import logging
import os
import re
import threading
import time
import uuid
from typing import Any, Callable, Optional, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from funboost.plugins.broker import (Broker, Capabilities, Delivery, OutgoingMessage, QueueSize,
                                     nothing_to_wait_for)
from funboost.process_local import ProcessLocal, ProcessLocalDict

from .options import MqttOptions

logger = logging.getLogger("funboost.mqtt")

NO_MATCHING_SUBSCRIBERS = 16  # MQTT 5 PUBACK reason code
_UNSAFE = re.compile(r"[+#\x00]")


def topic_of(prefix: str, queue_name: str) -> str:
    clean = _UNSAFE.sub("_", queue_name)
    if clean != queue_name:  # keep distinct queue names on distinct topics
        clean = f"{clean}_{hashlib.sha1(queue_name.encode()).hexdigest()[:8]}"
    return prefix + clean


def _new_client(opts: MqttOptions, client_id: str, manual_ack: bool = False) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    if opts.username:
        c.username_pw_set(opts.username, opts.password)
    c.reconnect_delay_set(min_delay=0.1, max_delay=2)  # resume within seconds after a broker restart
    return c


def _connect_props(session_expiry: int, receive_maximum: Optional[int] = None) -> Properties:
    p = Properties(PacketTypes.CONNECT)
    p.SessionExpiryInterval = session_expiry
    if receive_maximum is not None:
        p.ReceiveMaximum = receive_maximum
    return p


class _Batch:
    """The PUBACKs one publish() call waits for."""

    def __init__(self, n: int) -> None:
        self.remaining = n
        self.codes: dict[int, int] = {}  # mid -> reason code
        self.finished = threading.Event()
        self._lock = threading.Lock()
        if n == 0:
            self.finished.set()

    def done(self, mid: int, code: int) -> None:
        with self._lock:
            self.codes[mid] = code
            self.remaining -= 1
            if self.remaining <= 0:
                self.finished.set()


class _Publisher:
    """The process's QoS 1 publishing client for one server: PUBACK reason codes by message id, and
    a background retry of messages the broker had no subscriber for."""

    def __init__(self, opts: MqttOptions) -> None:
        self.opts = opts
        self.lock = threading.Lock()
        self.waiting: dict[int, _Batch] = {}  # mid -> the publish() call waiting for its PUBACK
        self.early: dict[int, int] = {}  # mid -> reason code, PUBACKs that beat their registration
        self.connected = threading.Event()
        self.parked: collections.deque = collections.deque()  # (topic, body, deadline)
        self.has_parked = threading.Event()
        self._parker: Optional[threading.Thread] = None
        self.client = _new_client(opts, f"funboost-pub-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self.client.on_publish = self._on_publish
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.set() if not rc.is_failure else None
        self.client.on_disconnect = lambda c, u, f, rc, p: self.connected.clear()
        self.client.connect(opts.host, opts.port, opts.keepalive, clean_start=True)
        self.client.loop_start()
        if not self.connected.wait(opts.connect_timeout):
            self.client.loop_stop()
            raise ConnectionError(f"MQTT broker {opts.host}:{opts.port} did not accept the connection")

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        code = reason.value if hasattr(reason, "value") else int(reason)
        with self.lock:
            batch = self.waiting.pop(mid, None)
            if batch is None:  # acknowledged before publish() registered the mid
                self.early[mid] = code
                return
        batch.done(mid, code)

    def publish(self, topic: str, bodies: Sequence[bytes], timeout: float) -> list[bytes]:
        """Publish QoS 1 and wait for the PUBACKs; return the bodies no subscriber took."""
        return self.publish_begin(topic, bodies, timeout)()

    def publish_begin(self, topic: str, bodies: Sequence[bytes], timeout: float) -> Callable[[], list[bytes]]:
        """Publish QoS 1 and return the wait for the PUBACKs (up to ``timeout`` seconds from when it is
        called), which returns the bodies no subscriber took. Several batches may be in flight at once."""
        batch = _Batch(len(bodies))
        index: dict[int, int] = {}
        for i, body in enumerate(bodies):
            mid = self.client.publish(topic, body, qos=1).mid
            index[mid] = i
            with self.lock:
                code = self.early.pop(mid, None)
                if code is None:
                    self.waiting[mid] = batch
            if code is not None:
                batch.done(mid, code)

        def wait() -> list[bytes]:
            if not batch.finished.wait(timeout):
                with self.lock:
                    for mid in index:
                        self.waiting.pop(mid, None)
                raise TimeoutError(f"{batch.remaining} of {len(bodies)} MQTT publishes not acknowledged within "
                                   f"{timeout}s ({self.opts.host}:{self.opts.port})")
            failed = [c for c in batch.codes.values() if c >= 0x80]
            if failed:
                raise RuntimeError(f"MQTT broker refused {len(failed)} publishes (reason code {failed[0]})")
            return [bodies[index[mid]] for mid, c in batch.codes.items() if c == NO_MATCHING_SUBSCRIBERS]
        return wait

    def park(self, topic: str, bodies: list[bytes]) -> None:
        deadline = time.monotonic() + self.opts.publish_timeout
        self.parked.extend((topic, b, deadline) for b in bodies)
        self.has_parked.set()
        if self._parker is None:
            self._parker = threading.Thread(target=self._retry_parked, name="funboost-mqtt-parked", daemon=True)
            self._parker.start()
            atexit.register(self.wait_parked)

    def _retry_parked(self) -> None:
        pause = 0.05
        while True:
            self.has_parked.wait()  # idle: no wake-ups while nothing is parked
            self.has_parked.clear()
            if not self.parked:
                continue
            items = [self.parked.popleft() for _ in range(len(self.parked))]
            by_topic: dict[str, list[tuple[bytes, float]]] = collections.defaultdict(list)
            for topic, body, deadline in items:
                by_topic[topic].append((body, deadline))
            for topic, entries in by_topic.items():
                try:
                    unheard = set(map(id, self.publish(topic, [b for b, _ in entries], self.opts.publish_timeout)))
                except Exception as exc:
                    logger.warning("MQTT: retrying parked messages for %s failed: %s", topic, exc)
                    unheard = {id(b) for b, _ in entries}
                now = time.monotonic()
                for body, deadline in entries:
                    if id(body) not in unheard:
                        continue
                    if now >= deadline:
                        logger.error("MQTT: message for %s dropped: no subscriber within %ss", topic,
                                     self.opts.publish_timeout)
                    else:
                        self.parked.append((topic, body, deadline))
            if self.parked:  # nobody subscribed yet: offer them again after a growing pause
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
                self.has_parked.set()
            else:
                pause = 0.05

    def wait_parked(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.parked and time.monotonic() < deadline:
            time.sleep(0.05)


_publishers: ProcessLocalDict[tuple, _Publisher] = ProcessLocalDict()


def publisher_for(opts: MqttOptions) -> _Publisher:
    """The process's publisher for this server and user (a forked child builds its own)."""
    return _publishers.get_or_create((opts.host, opts.port, opts.username), lambda: _Publisher(opts))


class _Subscriber:
    """One consumer's persistent session, subscription and buffer."""

    def __init__(self, broker: "MqttBroker") -> None:
        o = broker.options
        self.opts = o
        self.topic_filter = broker.topic_filter
        self.client_id = o.client_id or f"funboost-{os.getpid()}-{uuid.uuid4().hex[:10]}"
        self.buffer: collections.deque = collections.deque()
        self.cond = threading.Condition()
        self.subscribed = threading.Event()
        self.unsubscribed = threading.Event()
        self.error: Optional[str] = None
        c = self.client = _new_client(o, self.client_id, manual_ack=True)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = lambda cl, u, mid, rcs, p: self.unsubscribed.set()
        c.on_message = self._on_message
        c.connect(o.host, o.port, o.keepalive, clean_start=False,
                  properties=_connect_props(o.session_expiry, o.receive_maximum))
        c.loop_start()
        if not self.subscribed.wait(o.connect_timeout * 2):
            c.loop_stop()
            raise ConnectionError(self.error or f"MQTT: no subscription to {self.topic_filter} within "
                                                f"{o.connect_timeout * 2}s")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.error = f"MQTT connect refused: {reason}"
            return
        shared_ok = getattr(props, "SharedSubscriptionAvailable", 1)
        if self.topic_filter.startswith("$share/") and not shared_ok:
            self.error = "the MQTT broker has no shared subscriptions: use broker_kind MQTT_BROADCAST"
            logger.error(self.error)
            return
        # always (re)subscribe: a broker that lost our session (restart without persistence) forgot it
        client.subscribe(self.topic_filter, options=SubscribeOptions(qos=1))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        bad = [r for r in reasons if r.is_failure]
        if bad:
            self.error = f"MQTT subscription to {self.topic_filter} refused: {bad[0]}"
            logger.error(self.error)
            return
        self.subscribed.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.cond:
            self.buffer.append(Delivery(body=msg.payload, tag=(msg.mid, msg.qos), redelivered=bool(msg.dup)))
            self.cond.notify()

    def take(self, max_count: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self.cond.wait(left)
            return [self.buffer.popleft() for _ in range(min(max_count, len(self.buffer)))]

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            mid, qos = d.tag
            self.client.ack(mid, qos)

    def close(self, hand_back: Any) -> None:
        """Stop receiving, hand back what was buffered and never run, and end the session."""
        self.client.unsubscribe(self.topic_filter)
        self.unsubscribed.wait(2.0)
        with self.cond:
            left, self.buffer = list(self.buffer), collections.deque()
        if left:
            try:
                hand_back(left)
            except Exception as exc:
                logger.error("MQTT: could not hand back %d buffered messages: %s", len(left), exc)
        end = Properties(PacketTypes.DISCONNECT)
        end.SessionExpiryInterval = 0  # nothing of ours is left in it
        self.client.disconnect(properties=end)
        self.client.loop_stop()


class MqttBroker(Broker):
    kind = "mqtt"
    aliases = ()
    capabilities = Capabilities(
        at_least_once=False,  # a SIGKILLed consumer's messages wait for a client with its id (see module doc)
        persistent=False,  # only if the MQTT broker persists sessions (Mosquitto's default does not)
        native_requeue=True,  # republished, then acknowledged
        dead_letter=True,  # published to <queue>_dlx (parked until a dead-letter consumer subscribes)
        native_delay=False, priority=False,
        ordering="none",  # a shared group spreads messages; a parked message is published again later
        queue_size="none",  # MQTT has no way to count
        in_flight_count=False,
        purge=False,  # MQTT cannot drop what sits in other sessions
        broadcast=False, request_response=False, cross_process=True)
    options_model = MqttOptions
    # a message nobody subscribed to is parked and offered again (a work queue must not drop it)
    park_unheard: bool = True

    def __init__(self, queue_name: str, options: Optional[MqttOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.options: MqttOptions
        self.topic = topic_of(self.options.topic_prefix, queue_name)
        self.topic_filter = self._topic_filter()
        # this process's subscription (a forked child subscribes with a session of its own)
        self._sub: ProcessLocal[_Subscriber] = ProcessLocal(lambda: _Subscriber(self))
        self._sub_lock = threading.Lock()

    def _topic_filter(self) -> str:
        return f"$share/{self.options.shared_group}/{self.topic}"

    @classmethod
    def check_available(cls, options: Any) -> Optional[str]:
        opts = options if isinstance(options, MqttOptions) else cls.options_model()
        try:
            publisher_for(opts)
        except Exception as exc:
            return f"MQTT broker at {opts.host}:{opts.port} is not reachable: {type(exc).__name__}: {exc}"
        return None

    # ------------------------------------------------------------------ data path
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self.publish_begin(messages)()

    def publish_begin(self, messages: Sequence[OutgoingMessage]) -> Callable[[], None]:
        """Publish now; the returned wait takes the PUBACKs (so that ``push_many`` and the pipelined mode
        keep several batches in flight, as a raw paho publisher does)."""
        bodies = [m.body.encode() if isinstance(m.body, str) else bytes(m.body) for m in messages]
        return self._publish_bodies_begin(bodies)

    def _publish_bodies(self, bodies: list[bytes]) -> None:
        self._publish_bodies_begin(bodies)()

    def _publish_bodies_begin(self, bodies: list[bytes]) -> Callable[[], None]:
        if not bodies:  # nothing to send: no connection is made for it
            return nothing_to_wait_for
        pub = publisher_for(self.options)
        wait = pub.publish_begin(self.topic, bodies, self.options.publish_timeout)

        def stored() -> None:
            unheard = wait()
            if unheard and self.park_unheard:
                logger.debug("MQTT: no subscriber of %s yet; parking %d messages", self.topic, len(unheard))
                pub.park(self.topic, unheard)
        return stored

    def _subscriber(self) -> _Subscriber:
        return self._sub.get()

    def run_consumer(self, consumer: Any) -> bool:
        """Subscribe before ``consume()`` returns; the engine's fetch loop does the rest."""
        self._subscriber()
        return False

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        if max_count <= 0:
            return []
        return self._subscriber().take(max_count, timeout)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self._subscriber().ack(deliveries)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """MQTT cannot un-acknowledge: publish the message again, then acknowledge the original."""
        if not deliveries:
            return
        self._publish_bodies([bytes(d.body) for d in deliveries])
        self.ack(deliveries)

    def queue_size(self) -> QueueSize:
        return QueueSize(ready=None)  # unknown, never a fake 0

    def purge(self) -> int:
        return -1  # not supported (capabilities.purge is False)

    def close(self) -> None:
        super().close()
        with self._sub_lock:
            sub = self._sub.clear()
        if sub is not None:
            sub.close(lambda left: self._publish_bodies([bytes(d.body) for d in left]))


class MqttBroadcastBroker(MqttBroker):
    """Every live consumer gets every message (a plain subscription; for brokers without shared
    subscriptions, or for fan-out)."""

    kind = "mqtt_broadcast"
    aliases = ("mqtt_pubsub",)
    capabilities = Capabilities(
        at_least_once=False, persistent=False, native_requeue=True, dead_letter=False, native_delay=False,
        priority=False, ordering="fifo", queue_size="none", in_flight_count=False, purge=False,
        broadcast=True, request_response=False, cross_process=True)
    park_unheard = False  # a broadcast reaches whoever listens now

    def _topic_filter(self) -> str:
        return self.topic
