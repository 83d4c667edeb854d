"""GRPC: the consumer hosts a gRPC server, publishers are clients. No broker server to run.

* ``fetch`` starts (once per host/port and process) the gRPC server and drains the queue's bounded
  in-process buffer, which the server's handlers fill.
* ``publish`` sends the JSON envelopes to the consumers at ``addresses`` (round robin, failover, health
  checks) and returns once one of them accepted them. A full buffer answers RESOURCE_EXHAUSTED and the
  client tries another consumer: backpressure instead of unbounded buffering.
* ``sync_call`` runs the function on a consumer and returns its result (or raises its error) in one
  round trip: the server hands the engine a :class:`Delivery` whose ``reply`` the engine calls with the
  final status.

Honest guarantees: nothing is persistent; a message accepted by a consumer that then dies is lost.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Optional, Sequence

from funboost.plugins.broker import (Broker, Capabilities, Delivery, OutgoingMessage, QueueSize,
                                     annotate_dead_letter, dead_letter_queue_name)
from funboost_grpc import server as _server
from funboost.process_local import fork_generation
from funboost_grpc.client import GrpcClient, get_client
from funboost_grpc.options import GrpcOptions
from funboost_grpc.proto import broker_pb2

logger = logging.getLogger("funboost.grpc")


class GrpcBroker(Broker):
    kind = "grpc"
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
    )
    options_model = GrpcOptions

    def __init__(self, queue_name: str, options: Optional[GrpcOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.options: GrpcOptions
        self._host: Optional[_server.ServerHost] = None
        self._queue: Optional[_server.LocalQueue] = None
        self._serve_lock = threading.Lock()
        self._client: Optional[GrpcClient] = None
        self._client_gen = -1
        self._closed = False
        self._dlx_registered = False

    # ----------------------------------------------------------------- consumer side
    def serve(self) -> str:
        """Start hosting this queue (the gRPC server starts once per host/port and process); return the
        address it listens on. ``fetch`` calls this on first use."""
        if self._queue is None:
            with self._serve_lock:
                if self._queue is None:
                    if self._closed:
                        raise RuntimeError(f"grpc broker of queue {self.queue_name!r} is closed")
                    self._host, self._queue = _server.acquire_queue(self.options, self.queue_name)
        assert self._host is not None
        return self._host.address

    @property
    def address(self) -> Optional[str]:
        """The address this consumer listens on, once it serves."""
        return self._host.address if self._host is not None else None

    def run_consumer(self, consumer: Any) -> bool:
        # start listening as soon as the consumer starts (publishers need not wait for the first fetch);
        # the engine's ordinary fetch loop does the rest
        self.serve()
        executor = getattr(consumer, "executor", None)
        params = getattr(consumer, "params", None)
        if (self._queue is not None and hasattr(consumer, "execute_inline") and hasattr(consumer, "paused")
                and hasattr(consumer, "stopped") and executor is not None
                and not getattr(executor, "is_async", True)
                and getattr(params, "concurrent_mode", None) == "threading"):
            # sync_call requests run in the server's handler thread (see server.InlineRunner)
            self._queue.inline = _server.InlineRunner(consumer, max(1, int(getattr(params, "concurrent_num", 1))))
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

    def reject(self, deliveries: Sequence[Delivery], reason: str) -> None:
        """Dead letters stay in this consumer process: they go to the buffer ``<queue>_dlx`` of the same
        server (publishers and a consumer of ``<queue>_dlx`` reach it like any queue). A full dead-letter
        buffer drops its oldest message rather than block the consumer."""
        if not deliveries:
            return
        if self._host is None or self._queue is None:
            super().reject(deliveries, reason)
            return
        dlx = self._host.queues.get(dead_letter_queue_name(self.queue_name))
        if dlx is None:
            dlx = self._dead_letter_queue()
        for d in deliveries:
            dlx.put_evicting((json.loads(annotate_dead_letter(d.body, reason)), None))
        self._queue.finish([d.tag for d in deliveries], failure=("DeadLettered", reason))

    def _dead_letter_queue(self) -> _server.LocalQueue:
        with self._serve_lock, _server._hosts_lock:  # the host's queue map is changed under that lock
            assert self._host is not None
            name = dead_letter_queue_name(self.queue_name)
            q = self._host.queues.get(name)
            if q is None:
                # this broker holds the dead-letter buffer until it closes (like its own buffer)
                q = self._host.register(name, self.options.buffer_size)
                self._dlx_registered = True
            return q

    # ----------------------------------------------------------------- publisher side
    @property
    def client(self) -> GrpcClient:
        c = self._client
        if c is None or self._client_gen != fork_generation():  # a forked child uses its own channels
            c = self._client = get_client(self.options)
            self._client_gen = fork_generation()
        return c

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        self.client.publish(self.queue_name, [m.body if isinstance(m.body, str) else str(m.body) for m in messages])

    def sync_call(self, body: str, timeout: float) -> Any:
        """Run the task on a consumer; return its result or raise
        :class:`funboost_grpc.errors.RemoteTaskError` (``exception_type``, ``exception_msg``, ``status``)."""
        if isinstance(body, (bytes, bytearray)):
            body = bytes(body).decode("utf-8")
        return self.client.call(self.queue_name, body, timeout)

    def health(self, timeout: float = 1.0) -> dict[str, str]:
        """The gRPC health status of this queue at every address, e.g. ``{"127.0.0.1:50061": "SERVING"}``."""
        return self.client.health(self.queue_name, timeout)

    # ----------------------------------------------------------------- both
    def queue_size(self) -> QueueSize:
        q = self._queue or _server.local_queue(self.options, self.queue_name)
        if q is not None:
            ready, in_flight = q.counts()
            return QueueSize(ready=ready, in_flight=in_flight)
        req = broker_pb2.StatsRequest(queue_name=self.queue_name)
        c = self.client
        replies = c.each(lambda ep: ep.stats(req, timeout=c.options.rpc_timeout, metadata=c.metadata), 1.0)
        if not replies:
            return QueueSize(ready=None)  # no consumer reachable: unknown, never a fake 0
        return QueueSize(ready=sum(r.ready for r in replies), in_flight=sum(r.in_flight for r in replies))

    def purge(self) -> int:
        q = self._queue or _server.local_queue(self.options, self.queue_name)
        if q is not None:
            return q.purge()
        req = broker_pb2.PurgeRequest(queue_name=self.queue_name)
        c = self.client
        replies = c.each(lambda ep: ep.purge(req, timeout=c.options.rpc_timeout, metadata=c.metadata), 1.0)
        return sum(r.purged for r in replies) if replies else -1

    def close(self) -> None:
        with self._serve_lock:
            self._closed = True
            host, self._host, self._queue = self._host, None, None
        if host is not None:
            q = host.queues.get(self.queue_name)
            if q is not None:
                q.inline = None  # the engine consumer that owned it is stopping
            if self._dlx_registered:
                _server.release_queue(host, dead_letter_queue_name(self.queue_name))
            _server.release_queue(host, self.queue_name)
        # channels are shared by the process (see client.get_client); they are not closed per broker
        super().close()

    @classmethod
    def check_available(cls, options: Any) -> Optional[str]:
        # there is no broker server: the consumer is the server, so this kind is always usable
        return None
