"""``ServingBroker``: the broker of a server transport (the consumer serves, publishers are clients), on
the framing-free pieces of this package. A transport subclasses it and supplies three things:

* :attr:`~ServingBroker.registry` – a :class:`~funboost.transport.server.ServerRegistry` of its servers;
* :meth:`~ServingBroker.start_server` – start a listening :class:`~funboost.transport.server.QueueServer`;
* :meth:`~ServingBroker.make_client` – the process-wide :class:`~funboost.transport.client.TransportClient`
  for these options.

Everything else (serving on ``run_consumer``, fetch / ack / requeue from the queue's buffer, dead letters
into ``<queue>_dlx`` on the same server, publish / ``sync_call`` with failover, sizes and purge, close) is
here. The options model must have ``host``, ``port`` and ``buffer_size``.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Sequence

from funboost.process_local import fork_generation
from funboost.plugins.broker import (Broker, Capabilities, Delivery, OutgoingMessage, QueueSize, annotate_dead_letter,
                                     dead_letter_queue_name)
from funboost.transport.calls import InlineRunner
from funboost.transport.client import TransportClient
from funboost.transport.options import TransportOptions
from funboost.transport.server import QueueServer, ServedQueue, ServerRegistry

if TYPE_CHECKING:  # pragma: no cover
    from funboost.plugins.host import ConsumerHost

logger = logging.getLogger("funboost.transport")

__all__ = ["ServingBroker"]


class ServingBroker(Broker):
    """Base of the server-transport broker kinds (grpc, tcp, http). Not persistent: an accepted message
    lives in the consumer process's buffer."""

    #: what every server transport does (a transport may override it)
    capabilities = Capabilities(
        at_least_once=False,  # an accepted message dies with the consumer process that holds it
        persistent=False,
        native_requeue=True,  # back into the consumer's own buffer
        dead_letter=True,  # into the buffer <queue>_dlx hosted by the same consumer process
        native_delay=False,
        priority=False,
        ordering="none",  # round robin over several consumers
        # the consumer's own buffer is exact; from a publisher it is the sum over the live consumers
        queue_size="approximate",
        in_flight_count=True,
        purge=True,
        broadcast=False,
        request_response=True,
        cross_process=True,
        # no broker server: a message can only be published once a consumer serves the queue
        needs_serving_consumer=True,
    )

    #: the servers of this transport in this process (one registry per transport class)
    registry: ClassVar[ServerRegistry]

    def __init__(self, queue_name: str, options: Any = None) -> None:
        super().__init__(queue_name, options)
        self.options: TransportOptions  # every transport's options model derives from it
        self._server: Optional[QueueServer] = None
        self._queue: Optional[ServedQueue] = None
        self._serve_lock = threading.Lock()
        self._client: Optional[TransportClient] = None
        self._client_gen = -1  # the fork generation the client was made in
        self._closed = False
        self._dlx_registered = False

    # ------------------------------------------------------------------ what a transport supplies
    def server_config_key(self) -> Any:
        """The options two brokers must agree on to share one server (security, sizes, threads…)."""
        raise NotImplementedError

    def start_server(self) -> QueueServer:
        """Start listening on ``options.host``/``options.port``; raise ``OSError`` if it cannot."""
        raise NotImplementedError

    def make_client(self) -> TransportClient:
        """The client for :meth:`client_options` (normally shared by the process per configuration)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ consumer side
    def serve(self) -> str:
        """Start hosting this queue (the server starts once per host/port and process); return the address
        it listens on. ``run_consumer`` and the first ``fetch`` call this."""
        if self._queue is None:
            with self._serve_lock:
                if self._queue is None:
                    if self._closed:
                        raise RuntimeError(f"{self.kind} broker of queue {self.queue_name!r} is closed")
                    o = self.options
                    self._server, self._queue = self.registry.acquire(
                        o.host, o.port, self.server_config_key(), self.start_server, self.queue_name, o.buffer_size)
        assert self._server is not None
        return self._server.address

    @property
    def address(self) -> Optional[str]:
        """The address this consumer listens on, once it serves."""
        return self._server.address if self._server is not None else None

    @property
    def server(self) -> Optional[QueueServer]:
        """The server this broker serves on, once it serves."""
        return self._server

    def run_consumer(self, consumer: "ConsumerHost") -> bool:
        # start listening as soon as the consumer starts (publishers need not wait for the first fetch);
        # the engine's ordinary fetch loop does the rest
        self.serve()
        if self._queue is not None:
            # sync_call requests run in the server's handler thread when the consumer allows it
            self._queue.inline = InlineRunner.for_consumer(consumer)
            # a request whose arguments do not fit the function is answered with an error at once
            self._queue.check_arguments = getattr(getattr(consumer, "setup", None), "check_arguments", None)
        return False

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        q = self._queue
        if q is None:
            if self._closed:  # a last fetch racing close(): do not start a server again
                time.sleep(min(timeout, 0.1))
                return []
            self.serve()
            q = self._queue
        assert q is not None
        return q.take(max_count, timeout)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries and self._queue is not None:
            self._queue.finish([d.tag for d in deliveries])

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries and self._queue is not None:
            self._queue.requeue([d.tag for d in deliveries])

    def replace_delivery(self, delivery: Delivery, message: OutgoingMessage) -> bool:
        """The copy of a requeued (or retry-later) task goes back into this consumer's buffer with the
        original's pending call, so a ``sync_call`` waiting for the task is answered by the copy's final run
        (published through the client, the copy would carry no caller and the original's settle would
        answer ``NoResult``)."""
        q = self._queue
        if q is None or type(delivery.tag) is not int:
            return False
        env = json.loads(message.body)
        return q.requeue_replaced(delivery.tag, lambda item: (env, item[1]))

    def reject(self, deliveries: Sequence[Delivery], reason: str) -> None:
        """Dead letters stay in this consumer process: they go to the buffer ``<queue>_dlx`` of the same
        server (publishers and a consumer of ``<queue>_dlx`` reach it like any queue). A full dead-letter
        buffer drops its oldest message rather than block the consumer."""
        if not deliveries:
            return
        if self._server is None or self._queue is None:
            super().reject(deliveries, reason)
            return
        dlx = self._server.queues.get(dead_letter_queue_name(self.queue_name))
        if dlx is None:
            dlx = self._dead_letter_queue()
        for d in deliveries:
            dropped = dlx.put_evicting((json.loads(annotate_dead_letter(d.body, reason)), None))
            if dropped is not None:
                logger.warning("%s dead-letter buffer %r is full; dropped the oldest message %s", self.kind,
                               dlx.name, (dropped[0].get("extra") or {}).get("task_id"))
        self._queue.finish([d.tag for d in deliveries], failure=("DeadLettered", reason))

    def _dead_letter_queue(self) -> ServedQueue:
        with self._serve_lock, self.registry.lock:  # the server's queue map changes under that lock
            assert self._server is not None
            name = dead_letter_queue_name(self.queue_name)
            q = self._server.queues.get(name)
            if q is None:
                # this broker holds the dead-letter buffer until it closes (like its own buffer)
                q = self._server.register(name, self.options.buffer_size)
                self._dlx_registered = True
            return q

    def _local_queue(self) -> Optional[ServedQueue]:
        """This queue's buffer when this process serves it on this broker's host/port."""
        if self._queue is not None:
            return self._queue
        server = self.registry.lookup(self.options.host, self.options.port)
        return server.queues.get(self.queue_name) if server is not None else None

    # ------------------------------------------------------------------ publisher side
    @property
    def client(self) -> TransportClient:
        c = self._client
        if c is None or self._client_gen != fork_generation():  # a forked child uses its own connections
            c = self.make_client()
            o = self.options
            if o.port != 0 or getattr(o, "addresses", None) or self.registry.lookup(o.host, 0) is not None:
                self._client = c  # not while port 0 is unresolved: a server may start later
                self._client_gen = fork_generation()
        return c

    def client_options(self) -> Any:
        """The options the client is made from: ``self.options``, except that a publisher with ``port`` 0
        and no ``addresses`` targets the server this process started for port 0 (its real port), so a
        publisher in the same process as a serving consumer reaches it."""
        o = self.options
        if o.port == 0 and not getattr(o, "addresses", None):
            server = self.registry.lookup(o.host, 0)
            if server is not None:
                return o.model_copy(update={"port": server.port})
        return o

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        self.client.publish(self.queue_name, [m.body if isinstance(m.body, str) else str(m.body) for m in messages])

    def sync_call(self, body: Any, timeout: Optional[float]) -> Any:
        """Run the task on a consumer; return its result or raise the transport's ``RemoteTaskError``
        (``exception_type``, ``exception_msg``, ``status``)."""
        if isinstance(body, (bytes, bytearray)):
            body = bytes(body).decode("utf-8")
        return self.client.call(self.queue_name, body, timeout)

    def health(self, timeout: float = 1.0) -> dict[str, str]:
        """This queue's status at every address, e.g. ``{"127.0.0.1:50061": "SERVING"}``: ``SERVING``,
        ``NOT_SERVING`` (up, not hosting the queue), ``UNAUTHENTICATED``, ``UNREACHABLE`` or another status of
        the transport's health check (:meth:`TransportClient.check_health`)."""
        return self.client.health(self.queue_name, timeout)

    # ------------------------------------------------------------------ both
    def queue_size(self) -> QueueSize:
        q = self._local_queue()
        if q is not None:
            ready, in_flight, _ = q.counts()
            return QueueSize(ready=ready, in_flight=in_flight)
        counts = self.client.stats(self.queue_name)
        if counts is None:
            return QueueSize(ready=None)  # no consumer reachable: unknown, never a fake 0
        return QueueSize(ready=counts[0], in_flight=counts[1])

    def purge(self) -> int:
        q = self._local_queue()
        if q is not None:
            return q.purge_failing_calls()
        return self.client.purge(self.queue_name)

    def close(self) -> None:
        with self._serve_lock:
            self._closed = True
            server, self._server, self._queue = self._server, None, None
        if server is not None:
            q = server.queues.get(self.queue_name)
            if q is not None:
                q.inline = None  # the engine consumer that owned it is stopping
            if self._dlx_registered:
                self.registry.release(server, dead_letter_queue_name(self.queue_name))
            self.registry.release(server, self.queue_name)
        # clients are shared by the process (per configuration): they are not closed per broker
        super().close()

    @classmethod
    def check_available(cls, options: Any) -> Optional[str]:
        # there is no broker server: the consumer is the server, so the kind is always usable
        return None
