"""``MQTT``: QoS 1 work queue over a shared subscription; ``MQTT_BROADCAST``: every consumer gets every
message. paho-mqtt 2, MQTT 5 (for shared subscriptions, session expiry, receive maximum and the
"no matching subscribers" PUBACK).

* Consumers connect with ``clean_start=False`` and a session expiry (a persistent session: messages in
  flight survive a dropped connection and come again when the client reconnects), subscribe QoS 1 to
  ``$share/<group>/<topic>`` and acknowledge (PUBACK) only after the run (``manual_ack``). The broker
  sends at most ``receive_maximum`` unacknowledged messages: that is the prefetch bound. Beyond it the
  broker *queues* the consumer's share in its session.
* Publishers use one QoS 1 client per process and wait for every PUBACK. A PUBACK saying "no matching
  subscribers" means the broker dropped the message: it is parked and published again in the
  background until a consumer subscribes (for ``publish_timeout``, then dropped with an error log).
  A process that ends normally waits for its parked messages at interpreter exit (same bound).
* Graceful stop of an ``MQTT`` consumer (``_Subscriber.close``): it unsubscribes, then hands its whole
  session to the other members of the group: what it buffered *and* what the broker still queues for
  it (it keeps receiving until a marker published to a topic of its own comes back: the broker sends a
  session's messages in order). Each message is republished and acknowledged once the broker confirms
  a subscriber took it; then the session ends. If the broker answers "no matching subscribers" the
  consumer is the last one: it keeps its session, subscribed, exactly as a crashed consumer would, so
  nothing in it is lost. A stable ``client_id`` resumes that session; without one the stopping consumer
  announces the session (a retained message under the queue's topic) and the next consumer takes it
  over (connects with its id, hands its messages to the group, ends it).
* What is *not* guaranteed, measured on Mosquitto 2.0 (tests/test_mqtt.py): a consumer killed with
  SIGKILL keeps its session; the messages it held, and the share of new messages the broker keeps
  routing to its offline session, come back only when a client with the *same client id* reconnects,
  and are lost when the session expires. Hence ``at_least_once=False`` unless you give every consumer
  a stable ``client_id``. Messages survive a broker restart only if the broker persists sessions.
"""
from __future__ import annotations

import atexit
import collections
import hashlib
import json
import logging
import os
import random
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
from funboost.keepalive import on_graceful_exit

from .options import MqttOptions

logger = logging.getLogger("funboost.mqtt")

NO_MATCHING_SUBSCRIBERS = 16  # MQTT 5 PUBACK reason code
SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason code: another connection with our client id
_UNSAFE = re.compile(r"[+#\x00]")
_UNSAFE_LEVEL = re.compile(r"[+#/\x00]")
# control topics of a queue live under its topic: "<topic>/_funboost/drain/<client>" (the end-of-session
# marker of a consumer handing its session over) and "<topic>/_funboost/orphan/<client>" (retained: the
# session of a stopped consumer that waits to be taken over)
CONTROL = "/_funboost/"
# published to the work topic by a stopping consumer whose session was empty, to learn from the PUBACK
# whether another consumer subscribes; consumers acknowledge and drop it
PROBE = b'{"funboost_mqtt_probe": "a stopping consumer asked whether another one subscribes; ignore"}'

# outcomes of _Session.hand_off
DRAINED, LAST, INCOMPLETE = "drained", "last", "incomplete"


def _clean(name: str, unsafe: "re.Pattern[str]") -> str:
    clean = unsafe.sub("_", name)
    if clean != name:  # keep distinct names distinct
        clean = f"{clean}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return clean


def topic_of(prefix: str, queue_name: str) -> str:
    return prefix + _clean(queue_name, _UNSAFE)


def _new_client(opts: MqttOptions, client_id: str, manual_ack: bool = False, reconnect: bool = True) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack,
                    reconnect_on_failure=reconnect)
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
        # parked messages neither delivered nor dropped yet, *including* those a retry round holds (it
        # takes them out of ``parked`` while it publishes them): what the exit waits for
        self._unsettled = 0
        self._last_deadline = 0.0
        self._settled = threading.Condition()
        self._round = threading.Lock()  # one retry round at a time (the thread's, or the exit's own)
        self._parker: Optional[threading.Thread] = None
        self.client = _new_client(opts, f"funboost-pub-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self.client.on_publish = self._on_publish
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.set() if not rc.is_failure else None
        self.client.on_disconnect = lambda c, u, f, rc, p: self.connected.clear()
        try:
            self.client.connect(opts.host, opts.port, opts.keepalive, clean_start=True)
        except OSError as exc:  # a bare "[Errno 111] Connection refused" named neither MQTT nor the address
            raise ConnectionError(f"MQTT broker {opts.host}:{opts.port}: cannot connect: "
                                  f"{type(exc).__name__}: {exc}") from exc
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
        return [bodies[i] for i in self.publish_indices(topic, bodies, timeout)]

    def publish_indices(self, topic: str, bodies: Sequence[bytes], timeout: float) -> list[int]:
        """Publish QoS 1 and wait for the PUBACKs; return the positions of the bodies no subscriber took."""
        return self._begin(topic, bodies, timeout)()

    def publish_retained(self, topic: str, body: bytes, timeout: float, expiry: Optional[int] = None) -> None:
        """Store ``body`` as the retained message of ``topic`` (empty: remove it), for ``expiry`` seconds."""
        props = None
        if expiry:
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = expiry
        self._begin(topic, [body], timeout, retain=True, props=props)()

    def publish_begin(self, topic: str, bodies: Sequence[bytes], timeout: float) -> Callable[[], list[bytes]]:
        """Publish QoS 1 and return the wait for the PUBACKs (up to ``timeout`` seconds from when it is
        called), which returns the bodies no subscriber took. Several batches may be in flight at once."""
        wait = self._begin(topic, bodies, timeout)
        return lambda: [bodies[i] for i in wait()]

    def _begin(self, topic: str, bodies: Sequence[bytes], timeout: float, retain: bool = False,
               props: Optional[Properties] = None) -> Callable[[], list[int]]:
        batch = _Batch(len(bodies))
        index: dict[int, int] = {}
        for i, body in enumerate(bodies):
            mid = self.client.publish(topic, body, qos=1, retain=retain, properties=props).mid
            index[mid] = i
            with self.lock:
                code = self.early.pop(mid, None)
                if code is None:
                    self.waiting[mid] = batch
            if code is not None:
                batch.done(mid, code)

        def wait() -> list[int]:
            if not batch.finished.wait(timeout):
                with self.lock:
                    for mid in index:
                        self.waiting.pop(mid, None)
                raise TimeoutError(f"{batch.remaining} of {len(bodies)} MQTT publishes not acknowledged within "
                                   f"{timeout}s ({self.opts.host}:{self.opts.port})")
            failed = [c for c in batch.codes.values() if c >= 0x80]
            if failed:
                raise RuntimeError(f"MQTT broker refused {len(failed)} publishes (reason code {failed[0]})")
            return sorted(index[mid] for mid, c in batch.codes.items() if c == NO_MATCHING_SUBSCRIBERS)
        return wait

    # ------------------------------------------------------------------ parked messages
    def park(self, topic: str, bodies: list[bytes]) -> None:
        deadline = time.monotonic() + self.opts.publish_timeout
        with self._settled:
            self._unsettled += len(bodies)
            self._last_deadline = max(self._last_deadline, deadline)
            self.parked.extend((topic, b, deadline) for b in bodies)
        self.has_parked.set()
        if self._parker is None:
            t = threading.Thread(target=self._retry_parked, name="funboost-mqtt-parked", daemon=True)
            try:
                t.start()
            except RuntimeError:  # the interpreter is shutting down: wait_parked runs the retries itself
                return
            self._parker = t

    @property
    def unsettled(self) -> int:
        """Parked messages not yet delivered to a subscriber nor dropped."""
        with self._settled:
            return self._unsettled

    def _retry_round(self) -> bool:
        """Offer every parked message once more; True if some are still parked (nobody subscribes yet)."""
        with self._round:
            items = [self.parked.popleft() for _ in range(len(self.parked))]
            by_topic: dict[str, list[tuple[bytes, float]]] = collections.defaultdict(list)
            for topic, body, deadline in items:
                by_topic[topic].append((body, deadline))
            for topic, entries in by_topic.items():
                try:
                    unheard = set(self.publish_indices(topic, [b for b, _ in entries], self.opts.publish_timeout))
                except Exception as exc:
                    logger.warning("MQTT: retrying parked messages for %s failed: %s", topic, exc)
                    unheard = set(range(len(entries)))
                now = time.monotonic()
                dropped = 0
                for i, (body, deadline) in enumerate(entries):
                    if i not in unheard:
                        continue
                    if now >= deadline:
                        dropped += 1
                    else:
                        self.parked.append((topic, body, deadline))
                if dropped:
                    logger.error("MQTT: %d message(s) for %s dropped: no subscriber within %ss (publish_timeout)",
                                 dropped, topic, self.opts.publish_timeout)
                with self._settled:
                    self._unsettled -= len(entries) - (len(unheard) - dropped)
                    self._settled.notify_all()
            return bool(self.parked)

    def _retry_parked(self) -> None:
        pause = 0.05
        while True:
            self.has_parked.wait()  # idle: no wake-ups while nothing is parked
            self.has_parked.clear()
            if self._retry_round():  # nobody subscribed yet: offer them again after a growing pause
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
                self.has_parked.set()
            else:
                pause = 0.05

    def wait_parked(self, timeout: Optional[float] = None) -> int:
        """Wait until every parked message was delivered or dropped (each is dropped ``publish_timeout``
        after it was parked; a retry round in progress at that moment may take ``publish_timeout`` more for
        its PUBACKs), or ``timeout``. Returns how many are still unsettled."""
        with self._settled:
            limit = self._last_deadline + self.opts.publish_timeout + 1.0
        if timeout is not None:
            limit = min(limit, time.monotonic() + timeout)
        pause = 0.05
        while True:
            with self._settled:
                left = limit - time.monotonic()
                if not self._unsettled or left <= 0:
                    return self._unsettled
                if self._parker is not None and self._parker.is_alive():
                    self._settled.wait(min(left, 0.5))
                    continue
            # no retry thread (it could not start at interpreter shutdown): run the retries here
            if self._retry_round():
                time.sleep(min(pause, max(0.0, left)))
                pause = min(pause * 2, 0.5)


_publishers: ProcessLocalDict[tuple, _Publisher] = ProcessLocalDict()


def publisher_for(opts: MqttOptions) -> _Publisher:
    """The process's publisher for this server and user (a forked child builds its own)."""
    return _publishers.get_or_create((opts.host, opts.port, opts.username), lambda: _Publisher(opts))


def wait_for_parked_messages(timeout: Optional[float] = None) -> int:
    """Wait until the messages this process parked (published while nobody subscribed) were delivered or
    dropped (see :meth:`_Publisher.wait_parked`). Runs at interpreter exit; returns how many are left."""
    left = 0
    for pub in _publishers.values():
        n = pub.unsettled
        if not n:
            continue
        logger.warning("MQTT: waiting up to %ss for a subscriber of %d parked message(s) before exiting",
                       pub.opts.publish_timeout, n)
        left += pub.wait_parked(timeout)
    return left


# registered at import, i.e. before core's own exit handlers (publishing.flush_all_at_exit is registered at
# the first pipelined publisher): atexit runs last-in first-out, so messages that the flush parks are
# waited for too
atexit.register(wait_for_parked_messages)
# and after a graceful stop (SIGTERM / Ctrl-C) that ends the process with os._exit, which skips atexit
on_graceful_exit(wait_for_parked_messages)


class _Session:
    """An MQTT 5 client on a persistent session with manual acknowledgement: what it receives on the work
    topic is buffered for take(); ``hand_off`` gives the whole session to the other members of the group."""

    def __init__(self, opts: MqttOptions, client_id: str, topic: str, reconnect: bool = True,
                 session_expiry: Optional[int] = None) -> None:
        self.opts = opts
        self.session_expiry = opts.session_expiry if session_expiry is None else session_expiry
        self.client_id = client_id
        self.topic = topic
        self.drain_topic = f"{topic}{CONTROL}drain/{_clean(client_id, _UNSAFE_LEVEL)}"
        self.buffer: collections.deque = collections.deque()
        self.cond = threading.Condition()
        self.unacked: set[int] = set()  # message ids handed out by take() and not acknowledged yet
        self.connected = threading.Event()
        self.lost = threading.Event()  # the connection ended (for a session without reconnect)
        self.lost_reason: Any = None
        self.session_present = False
        self.error: Optional[str] = None
        self._replies: dict[int, list] = {}  # SUBACK / UNSUBACK reason codes by packet id
        self._replied = threading.Condition()
        self._drain_nonce: Optional[bytes] = None
        self._drained = threading.Event()
        self.was_empty = False  # the last hand_off found nothing in the session
        c = self.client = _new_client(opts, client_id, manual_ack=True, reconnect=reconnect)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_reply
        c.on_unsubscribe = self._on_reply
        c.on_message = self._on_message

    def start(self) -> None:
        try:
            self.client.connect(self.opts.host, self.opts.port, self.opts.keepalive, clean_start=False,
                                properties=_connect_props(self.session_expiry, self.opts.receive_maximum))
        except OSError as exc:
            raise ConnectionError(f"MQTT broker {self.opts.host}:{self.opts.port}: cannot connect: "
                                  f"{type(exc).__name__}: {exc}") from exc
        self.client.loop_start()

    # ------------------------------------------------------------------ paho callbacks (network thread)
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.error = f"MQTT connect refused: {reason}"
            return
        self.session_present = bool(getattr(flags, "session_present", False))
        self.lost.clear()
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connected.clear()
        self.lost_reason = reason
        self.lost.set()
        with self._replied:  # a request waiting for its reply gives up now
            self._replied.notify_all()

    def _on_reply(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        with self._replied:
            self._replies[mid] = list(reasons)
            self._replied.notify_all()

    @property
    def taken_over(self) -> bool:
        """The broker ended our connection because another one connected with our client id."""
        return self.lost.is_set() and getattr(self.lost_reason, "value", None) == SESSION_TAKEN_OVER

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.topic != self.topic:
            self._on_control(client, msg)
            return
        if msg.payload == PROBE:  # another consumer's question, answered by the PUBACK already
            if msg.qos:
                client.ack(msg.mid, msg.qos)
            return
        with self.cond:
            self.buffer.append(Delivery(body=msg.payload, tag=(msg.mid, msg.qos), redelivered=bool(msg.dup)))
            self.cond.notify()

    def _on_control(self, client: Any, msg: Any) -> None:
        """A message on one of our control topics (under the work topic)."""
        if msg.qos:
            client.ack(msg.mid, msg.qos)
        if msg.topic == self.drain_topic and msg.payload == self._drain_nonce:
            # the broker sends a session's messages in order: everything queued before it has arrived
            self._drained.set()

    # ------------------------------------------------------------------ requests
    def _request(self, send: Callable[[], tuple], deadline: float) -> Optional[list]:
        """Send a SUBSCRIBE / UNSUBSCRIBE and wait for the broker's reason codes (None: no answer in time).
        A reply that comes before we wait is kept in ``_replies`` by its packet id."""
        rc, mid = send()
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            return None
        with self._replied:
            while mid not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.lost.is_set():
                    return None
                self._replied.wait(min(left, 0.5))
            return self._replies.pop(mid)

    def subscribe(self, topic_filter: str, qos: int, deadline: float) -> bool:
        r = self._request(lambda: self.client.subscribe(topic_filter, options=SubscribeOptions(qos=qos)), deadline)
        return r is not None and not any(x.is_failure for x in r)

    def unsubscribe(self, filters: list[str], deadline: float) -> bool:
        r = self._request(lambda: self.client.unsubscribe(filters), deadline)
        return r is not None and not any(x.is_failure for x in r)  # ("no subscription existed" is no failure)

    # ------------------------------------------------------------------ data path
    def take(self, max_count: int, timeout: float, track: bool = True) -> list[Delivery]:
        """Up to ``max_count`` buffered deliveries; ``track``: remembered as unacknowledged until ack()."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self.cond.wait(left)
            out = [self.buffer.popleft() for _ in range(min(max_count, len(self.buffer)))]
            if track:
                self.unacked.update(d.tag[0] for d in out if d.tag[1])
            return out

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            mid, qos = d.tag
            self.client.ack(mid, qos)
        with self.cond:
            self.unacked.difference_update(d.tag[0] for d in deliveries)

    def put_back(self, deliveries: Sequence[Delivery]) -> None:
        """Return deliveries taken by take() to the end of this consumer's own buffer (not acknowledged)."""
        with self.cond:
            self.unacked.difference_update(d.tag[0] for d in deliveries)
            self.buffer.extend(deliveries)
            self.cond.notify_all()

    # ------------------------------------------------------------------ hand-off and ending
    def hand_off(self, pub: _Publisher, deadline: float) -> str:
        """Give every message of this session (no longer subscribed to the work topic) to the other members
        of the group: republish it, acknowledge it once the broker confirms that a subscriber took it.

        Returns ``DRAINED`` (the session holds nothing more but what take() handed out and is not
        acknowledged yet), ``LAST`` (the broker said nobody else subscribes: the rest stays in the
        session) or ``INCOMPLETE`` (deadline or connection lost: the rest stays in the session)."""
        self._drained.clear()
        self.was_empty = False
        self._drain_nonce = uuid.uuid4().hex.encode()
        if not self.subscribe(self.drain_topic, 1, deadline):
            return INCOMPLETE
        republished = False
        next_marker = 0.0
        try:
            while True:
                now = time.monotonic()
                if now >= deadline or self.lost.is_set():
                    return INCOMPLETE
                if now >= next_marker:  # sent again now and then: a full session queue drops what comes in
                    pub.publish(self.drain_topic, [self._drain_nonce], max(0.1, deadline - now))
                    next_marker = now + 1.0
                drained = self._drained.is_set()  # before take(): all that preceded the marker is buffered
                batch = self.take(self.opts.receive_maximum, 0.0 if drained else min(0.2, deadline - now), track=False)
                if batch:
                    unheard = set(pub.publish_indices(self.topic, [bytes(d.body) for d in batch],
                                                      max(0.1, deadline - time.monotonic())))
                    republished = True
                    self.ack([d for i, d in enumerate(batch) if i not in unheard])
                    if unheard:  # nobody else subscribes: what we hold stays ours (unacknowledged)
                        return LAST
                elif drained:
                    if republished:
                        return DRAINED
                    # an empty session: ask whether anyone else subscribes (they drop the probe)
                    self.was_empty = True
                    heard = not pub.publish_indices(self.topic, [PROBE], max(0.1, deadline - time.monotonic()))
                    return DRAINED if heard else LAST
        except Exception as exc:  # PUBACK timeout, refused publish: leave the rest in the session
            logger.warning("MQTT: handing over the session of %s stopped: %s", self.client_id, exc)
            return INCOMPLETE
        finally:
            self._drain_nonce = None

    def end(self, keep_session: bool) -> None:
        """Disconnect; the broker keeps the session (``session_expiry``) only if ``keep_session``."""
        if self.connected.is_set():
            props = None
            if not keep_session:
                props = Properties(PacketTypes.DISCONNECT)
                props.SessionExpiryInterval = 0  # nothing of ours is left in it
            self.client.disconnect(properties=props)
        self.client.loop_stop()


class _Subscriber(_Session):
    """One consumer's persistent session, subscription and buffer; for the ``MQTT`` kind also the
    hand-off at close and the take-over of sessions that stopped consumers left behind."""

    def __init__(self, broker: "MqttBroker") -> None:
        o = broker.options
        super().__init__(o, o.client_id or f"funboost-{os.getpid()}-{uuid.uuid4().hex[:10]}", broker.topic)
        self.stable_id = o.client_id is not None
        self.topic_filter = broker.topic_filter
        self.work_queue = broker.hands_off  # MQTT: hand off at close; MQTT_BROADCAST: every consumer has its own
        self.orphan_prefix = f"{self.topic}{CONTROL}orphan/"
        self.orphan_filter = self.orphan_prefix + "+"
        self.subscribed = threading.Event()
        self.closing = False
        self._connect_subs: set[int] = set()
        self._adoptions: dict[str, threading.Thread] = {}
        # announcements of stopped consumers' sessions, by topic: removed since we saw them (someone took
        # the session over), or claimed by another consumer that is taking it over (when we last heard)
        self._orphans = threading.Condition()
        self._cleared: set[str] = set()
        self._claims: dict[str, float] = {}
        self._adopt_lock = threading.Lock()
        self._stop_adopting = threading.Event()
        self.start()
        if not self.subscribed.wait(o.connect_timeout * 2):
            self.client.loop_stop()
            raise ConnectionError(self.error or f"MQTT: no subscription to {self.topic_filter} within "
                                                f"{o.connect_timeout * 2}s")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        super()._on_connect(client, userdata, flags, reason, props)
        if reason.is_failure or self.closing:  # closing: the hand-off unsubscribed on purpose
            return
        shared_ok = getattr(props, "SharedSubscriptionAvailable", 1)
        if self.topic_filter.startswith("$share/") and not shared_ok:
            self.error = "the MQTT broker has no shared subscriptions: use broker_kind MQTT_BROADCAST"
            logger.error(self.error)
            return
        # always (re)subscribe: a broker that lost our session (restart without persistence) forgot it
        subs = [(self.topic_filter, SubscribeOptions(qos=1))]
        if self.work_queue:  # sessions left by stopped consumers are announced there (retained, QoS 0)
            subs.append((self.orphan_filter, SubscribeOptions(qos=0)))
        rc, mid = client.subscribe(subs)
        self._connect_subs.clear()  # (ids of a connection that dropped before its SUBACK)
        if mid is not None:
            self._connect_subs.add(mid)  # (the SUBACK is handled by this thread, after this callback)

    def _on_reply(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if mid not in self._connect_subs:
            return super()._on_reply(client, userdata, mid, reasons, props)
        self._connect_subs.discard(mid)
        if reasons[0].is_failure:
            self.error = f"MQTT subscription to {self.topic_filter} refused: {reasons[0]}"
            logger.error(self.error)
            return
        if len(reasons) > 1 and reasons[1].is_failure:
            logger.warning("MQTT: subscription to %s refused (%s): sessions of stopped consumers of %s are not "
                           "taken over", self.orphan_filter, reasons[1], self.topic)
        self.subscribed.set()

    def _on_control(self, client: Any, msg: Any) -> None:
        if msg.topic.startswith(self.orphan_prefix):
            self._orphan_announced(msg.topic, msg.payload)
            return
        super()._on_control(client, msg)

    # ------------------------------------------------------------------ taking over stopped consumers' sessions
    def _orphan_announced(self, marker_topic: str, payload: bytes) -> None:
        if not payload:  # removed: the session was taken over
            with self._orphans:
                self._cleared.add(marker_topic)
                self._claims.pop(marker_topic, None)
                self._orphans.notify_all()
            return
        try:
            info = json.loads(payload)
            client_id, topic_filter = str(info["client_id"]), str(info["filter"])
        except Exception:
            logger.warning("MQTT: ignoring a malformed announcement on %s", marker_topic)
            return
        with self._orphans:
            self._cleared.discard(marker_topic)
            taken_by = info.get("taken_by")
            if taken_by and taken_by != self.client_id:
                self._claims[marker_topic] = time.monotonic()
            self._orphans.notify_all()
        if client_id == self.client_id or self.closing:
            return
        with self._adopt_lock:
            t = self._adoptions.get(client_id)
            if t is not None and t.is_alive():
                return
            t = threading.Thread(target=self._adopt, args=(client_id, topic_filter, marker_topic), daemon=True,
                                 name=f"funboost-mqtt-takeover-{client_id}")
            self._adoptions[client_id] = t
            t.start()

    def _adopt(self, client_id: str, topic_filter: str, marker_topic: str) -> None:
        """Take over the session a stopped consumer left (it was the last one then): connect with its
        client id, unsubscribe it, hand its messages to the group (us included), end it. Connecting with
        its id also excludes anyone else doing the same: the broker drops the older connection."""
        # Consumers that start together all see the announcement. Each connection with the id drops the
        # previous one, and what the dropped one republished without acknowledging yet would run twice: so
        # a taker first claims the announcement, and the others leave it alone while the claim is fresh
        # (a claimer that died goes stale). A random head start keeps claims from crossing.
        o = self.opts
        stale = o.handoff_timeout + 2 * o.connect_timeout + o.publish_timeout
        pause = 1.0
        self._stop_adopting.wait(random.uniform(0.0, 0.3))
        while True:
            with self._orphans:
                while True:
                    if self._stop_adopting.is_set() or marker_topic in self._cleared:
                        return
                    claimed = self._claims.get(marker_topic)
                    if claimed is None or time.monotonic() - claimed >= stale:
                        break
                    self._orphans.wait(claimed + stale - time.monotonic())
            outcome = self._adopt_once(client_id, topic_filter, marker_topic)
            if outcome != INCOMPLETE:
                return
            self._stop_adopting.wait(pause)  # retry later: the session and its announcement are still there
            pause = min(pause * 2, 30.0)

    def _adopt_once(self, client_id: str, topic_filter: str, marker_topic: str) -> str:
        o = self.opts
        # no reconnect: a connection dropped for another with this id means someone else carries on. The
        # session keeps an expiry even if ours is 0: if we fail halfway, its messages must stay for the next
        s = _Session(o, client_id, self.topic, reconnect=False, session_expiry=o.session_expiry or 300)
        deadline = time.monotonic() + o.handoff_timeout
        try:
            pub = publisher_for(o)
            claim = {"client_id": client_id, "filter": topic_filter, "taken_by": self.client_id}
            pub.publish_retained(marker_topic, json.dumps(claim).encode(), o.publish_timeout,
                                 expiry=o.session_expiry or 300)
            s.start()
            if not s.connected.wait(o.connect_timeout):
                s.end(keep_session=True)
                return INCOMPLETE
            if not s.session_present:  # another consumer took it over and ended it already, or it expired
                s.end(keep_session=False)
                with self._orphans:
                    cleared = marker_topic in self._cleared
                if not cleared:
                    pub.publish_retained(marker_topic, b"", o.publish_timeout)  # (an empty one removes it)
                    logger.warning("MQTT: the session of stopped consumer %s was gone when %s came to take it over "
                                   "(expired after session_expiry=%ss, or taken over by another consumer)",
                                   client_id, self.client_id, o.session_expiry)
                return DRAINED
            if not s.unsubscribe([topic_filter], deadline):
                s.end(keep_session=True)
                return INCOMPLETE
            outcome = s.hand_off(pub, deadline)
            if outcome == DRAINED:
                s.end(keep_session=False)
                pub.publish_retained(marker_topic, b"", o.publish_timeout)
                logger.info("MQTT: took over the session of stopped consumer %s", client_id)
                return DRAINED
            taken_over = s.taken_over  # another consumer (connected with its id) carries on: not us
            s.end(keep_session=True)
            return LAST if taken_over else outcome
        except Exception as exc:
            logger.warning("MQTT: could not take over the session of stopped consumer %s: %s", client_id, exc)
            s.end(keep_session=True)
            return INCOMPLETE

    # ------------------------------------------------------------------ stopping
    def close(self) -> None:
        """Stop receiving and leave nothing behind: see the module doc (``MQTT_BROADCAST`` drops its own
        copies)."""
        self.closing = True
        self._stop_adopting.set()
        with self._orphans:
            self._orphans.notify_all()
        o = self.opts
        with self._adopt_lock:
            adoptions = list(self._adoptions.values())
        for t in adoptions:  # one under way finishes (within its handoff_timeout), while we still subscribe
            t.join(o.handoff_timeout + 2 * o.connect_timeout)
        deadline = time.monotonic() + o.handoff_timeout
        if not self.work_queue:
            self._close_broadcast(deadline)
            return
        unsubscribed = self.connected.wait(max(0.0, deadline - time.monotonic())) and \
            self.unsubscribe([self.topic_filter, self.orphan_filter], deadline)
        try:
            outcome = self.hand_off(publisher_for(o), deadline) if unsubscribed else INCOMPLETE
        except Exception as exc:
            logger.warning("MQTT: %s could not hand over its session: %s", self.client_id, exc)
            outcome = INCOMPLETE
        with self.cond:
            running = len(self.unacked)  # tasks the engine took and did not finish: only this session has them
        if outcome == DRAINED and not running:
            self.end(keep_session=False)
            return
        if outcome == LAST:
            # as after a crash: the session also keeps what is published until a consumer is back
            self.subscribe(self.topic_filter, 1, time.monotonic() + o.connect_timeout)
        self.end(keep_session=True)
        why = ("as the last consumer" if outcome == LAST else f"with {running} unfinished task(s)" if running
               else "before it could hand everything to the other consumers")
        if not o.session_expiry:
            if outcome == LAST and self.was_empty and not running:
                return  # nothing was lost with it
            logger.error("MQTT: consumer %s stopped %s with session_expiry=0: its session ended with the connection, "
                         "and the messages the broker held for it are lost", self.client_id, why)
            return
        log = logger.info if outcome == LAST else logger.warning
        if self.stable_id:
            log("MQTT: consumer %s stopped %s; its session keeps its messages until a consumer with client_id=%r "
                "connects (within session_expiry=%ss)", self.client_id, why, self.client_id, o.session_expiry)
            return
        # a generated client id never comes back: announce the session so that a consumer takes it over
        marker = json.dumps({"client_id": self.client_id, "filter": self.topic_filter}).encode()
        try:  # (the announcement expires with the session)
            publisher_for(o).publish_retained(self.orphan_prefix + _clean(self.client_id, _UNSAFE_LEVEL),
                                              marker, o.connect_timeout, expiry=o.session_expiry)
        except Exception as exc:
            logger.error("MQTT: consumer %s stopped %s and could not announce its session (%s): its messages come "
                         "back only to a client with this client_id within session_expiry=%ss", self.client_id, why,
                         exc, o.session_expiry)
            return
        log("MQTT: consumer %s stopped %s; the next consumer of %s takes over its session and its messages "
            "(within session_expiry=%ss)", self.client_id, why, self.topic, o.session_expiry)

    def _close_broadcast(self, deadline: float) -> None:
        """Unsubscribe, drop this consumer's copies that never ran, end the session. Publishing them again
        would give every other subscriber a second copy of messages it already has."""
        if self.connected.is_set():
            self.unsubscribe([self.topic_filter], deadline)
        with self.cond:
            left, self.buffer = len(self.buffer), collections.deque()
        if left:
            logger.info("MQTT: broadcast consumer %s stopped with %d buffered message(s) not run; the other "
                        "subscribers have their own copies", self.client_id, left)
        self.end(keep_session=False)


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
    # a stopping consumer hands its session to the group (and takes over those stopped consumers left)
    hands_off: bool = True

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
        if not deliveries:
            return
        sub = self._sub.peek()
        if sub is None:  # closed meanwhile (a task that outran shutdown_timeout): its session still has it
            logger.warning("MQTT: %d message(s) finished after the consumer of %s closed: not acknowledged, they "
                           "run again where its session is taken over", len(deliveries), self.queue_name)
            return
        sub.ack(deliveries)

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
            sub.close()


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
    hands_off = False  # every consumer has its own copy of every message: nothing to hand to the others

    def _topic_filter(self) -> str:
        return self.topic

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """Back into this consumer's own buffer: every subscriber holds its own copy of a broadcast, so
        publishing it again would give each of the others one more."""
        if not deliveries:
            return
        sub = self._sub.peek()
        if sub is None:  # closed: its copies end with it, as the others have theirs
            logger.info("MQTT: %d broadcast message(s) handed back after the consumer of %s closed: dropped",
                        len(deliveries), self.queue_name)
            return
        sub.put_back(deliveries)
