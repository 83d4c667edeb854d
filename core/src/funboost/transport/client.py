"""The publisher side of a server transport, without its framing: several consumer endpoints, round-robin
balancing, failover, backoff, and health probes of endpoints marked down.

A transport subclasses :class:`TransportClient` and writes only the four ``send_*`` methods and ``probe``
(one request to one endpoint, in its framing). They return the reply or raise an
:class:`~funboost.transport.errors.AttemptFailed` subclass that says what happened
(:class:`EndpointUnreachable`, :class:`EndpointRefused`, :class:`AttemptTimedOut`); any other exception
(normally the transport's :class:`TransportError` subclass) ends the operation. :meth:`publish` and
:meth:`call` decide about failover from that.
"""
from __future__ import annotations

import itertools
import threading
import time
from typing import Any, Callable, Generic, Optional, Sequence, TypeVar, Union

from funboost.exceptions import RpcTimeout
from funboost.transport.calls import decode_status, result_of
from funboost.transport.errors import (AttemptFailed, AttemptTimedOut, EndpointRefused, EndpointUnreachable,
                                       MessageTooLarge, NoConsumerAvailable, RemoteTaskError, TransportError)

__all__ = ["Endpoint", "TransportClient"]

#: monotonic seconds an endpoint marked down is skipped if its health probe never answers (a safety net:
#: the prober clears the mark as soon as the endpoint is healthy)
DOWN_FOR = 3600.0


class Endpoint:
    """One consumer address; a transport subclasses it to hold its connection (channel, pool…)."""

    __slots__ = ("address", "down_until")

    def __init__(self, address: str) -> None:
        self.address = address
        self.down_until = 0.0  # monotonic time until which this address is skipped (0 = live)


E = TypeVar("E", bound=Endpoint)


class TransportClient(Generic[E]):
    """Failover and health for one set of consumer endpoints, shared by every broker of the process that
    talks to them (so marks of dead consumers are shared).

    :param endpoints: one per consumer address, in configuration order.
    :param max_body: largest body in bytes a request may carry (bigger: :attr:`too_large_error`).
    :param publish_timeout: how long ``publish`` (and a ``sync_call`` that no consumer takes) keeps trying.
    :param health_check_interval: seconds between probes of endpoints marked down.
    """

    #: errors raised to the user; a transport sets its own subclasses
    error: type[TransportError] = TransportError
    no_consumer_error: type[NoConsumerAvailable] = NoConsumerAvailable
    too_large_error: type[MessageTooLarge] = MessageTooLarge
    remote_error: type[RemoteTaskError] = RemoteTaskError
    #: name of the transport in messages and thread names
    transport_name = "transport"
    #: bytes of framing around one body in a publish batch (for splitting batches)
    per_body_overhead = 8
    #: the transport's option that sets the size limit (named in :attr:`too_large_error`)
    size_option = "max_message_bytes"

    def __init__(self, endpoints: Sequence[E], *, max_body: int, publish_timeout: float,
                 health_check_interval: float, max_message_bytes: Optional[int] = None) -> None:
        self.endpoints: list[E] = list(endpoints)
        self.max_body = max_body
        self.max_message_bytes = max_message_bytes if max_message_bytes is not None else max_body
        self.publish_timeout = publish_timeout
        self.health_check_interval = health_check_interval
        # the endpoint when there is exactly one address: sync_call's fast path skips the balancing loop
        self._single: Optional[E] = self.endpoints[0] if len(self.endpoints) == 1 else None
        self._rr = itertools.count()
        self._lock = threading.Lock()
        self._prober: Optional[threading.Thread] = None
        self._closed = False

    # ------------------------------------------------------------------ framing (a transport writes these)
    def send_publish(self, ep: E, queue_name: str, bodies: list[str]) -> int:
        """Send one batch; return how many bodies the consumer accepted (a prefix)."""
        raise NotImplementedError

    def prepare_call(self, queue_name: str, body: str) -> Any:
        """Build the call request once (it may be sent to several endpoints). Default: ``(queue, body)``."""
        return (queue_name, body)

    def send_call(self, ep: E, request: Any, timeout: float) -> Union[str, bytes]:
        """Send one call; return the reply's status JSON (:func:`~funboost.transport.calls.encode_status`)."""
        raise NotImplementedError

    def send_stats(self, ep: E, queue_name: str) -> tuple[int, int]:
        """``(ready, in_flight)`` of the queue at this consumer."""
        raise NotImplementedError

    def send_purge(self, ep: E, queue_name: str) -> int:
        """Purge the queue at this consumer; return how many messages were dropped."""
        raise NotImplementedError

    def check_health(self, ep: E, timeout: float, queue_name: Optional[str] = None) -> str:
        """The status of ``queue_name`` (the transport's default: the server itself) at this consumer:
        ``SERVING``, ``NOT_SERVING`` (up, not hosting the queue), ``UNAUTHENTICATED``, ``UNREACHABLE``, or
        another status name of the transport's health check."""
        raise NotImplementedError

    def probe(self, ep: E, timeout: float) -> bool:
        """True when the endpoint is healthy again (used for endpoints marked down). Default:
        :meth:`check_health` of the server says ``SERVING``."""
        return self.check_health(ep, timeout) == "SERVING"

    def close_endpoint(self, ep: E) -> None:
        """Release the endpoint's connection."""

    # ------------------------------------------------------------------ balancing and health
    def health(self, queue_name: Optional[str] = None, timeout: float = 1.0) -> dict[str, str]:
        """``{address: status}`` for every endpoint (:meth:`check_health`), of ``queue_name`` or, when None,
        of the server."""
        args = () if queue_name is None else (queue_name,)  # None: check_health's own default
        return {ep.address: self.check_health(ep, timeout, *args) for ep in self.endpoints}

    def order(self) -> list[E]:
        """Live endpoints in round-robin order, then the ones marked down (tried last, marks may be stale)."""
        eps = self.endpoints
        n = len(eps)
        if n == 1:
            return eps
        start = next(self._rr) % n
        rotated = eps[start:] + eps[:start]
        now = time.monotonic()
        live = [e for e in rotated if e.down_until <= now]
        if len(live) == n:
            return rotated
        return live + [e for e in rotated if e.down_until > now]

    def mark_down(self, ep: E) -> None:
        """Skip ``ep`` until a health probe sees it healthy again (started here, stops when none is down)."""
        ep.down_until = time.monotonic() + DOWN_FOR
        with self._lock:
            if not self._closed and (self._prober is None or not self._prober.is_alive()):
                self._prober = threading.Thread(target=self._probe_loop, daemon=True,
                                                name=f"funboost-{self.transport_name}-health")
                self._prober.start()

    def _probe_loop(self) -> None:
        interval = self.health_check_interval
        while not self._closed:
            down = [e for e in self.endpoints if e.down_until > time.monotonic()]
            if not down:
                return
            for ep in down:
                try:
                    healthy = self.probe(ep, min(1.0, interval * 2))
                except Exception:  # a probe that fails is "not healthy", never the end of probing
                    healthy = False
                if healthy:
                    ep.down_until = 0.0
            time.sleep(interval)

    # ------------------------------------------------------------------ operations
    def body_size(self, body: str) -> int:
        return len(body) if body.isascii() else len(body.encode("utf-8"))

    def check_size(self, body: str) -> None:
        size = self.body_size(body)
        if size > self.max_body:
            raise self.too_large_error(
                f"message of {size} bytes exceeds {self.size_option}={self.max_message_bytes} "
                f"(minus {self.max_message_bytes - self.max_body} of framing)", code="RESOURCE_EXHAUSTED")

    def _fit(self, pending: list[str]) -> list[str]:
        """The longest prefix of ``pending`` that fits in one request."""
        total, n = 0, 0
        for b in pending:
            total += len(b) + self.per_body_overhead
            if n and total > self.max_body:
                break
            n += 1
        return pending if n == len(pending) else pending[:n]

    def publish(self, queue_name: str, bodies: Sequence[str]) -> None:
        """Return once consumers have accepted every body; fail over and back off while none can.

        A batch goes to another consumer (or again to the same one) only when it surely was not accepted,
        as for a call: a consumer that did not answer in time may still take the batch it has in its socket
        buffer and run it, so sending it again could run every task twice.

        :raises NoConsumerAvailable: (:attr:`no_consumer_error`) nobody accepted within ``publish_timeout``.
        :raises TransportError: (:attr:`error`, code ``DEADLINE_EXCEEDED``) a consumer did not answer in
            time: whether it accepted the batch is unknown, and it is not sent again."""
        for b in bodies:
            self.check_size(b)
        pending = list(bodies)
        start = time.monotonic()
        deadline = start + self.publish_timeout
        backoff = 0.02
        last_error = "no address configured"
        while pending:
            progressed = False
            for ep in self.order():
                batch = self._fit(pending)
                try:
                    accepted = self.send_publish(ep, queue_name, batch)
                except AttemptFailed as err:
                    if isinstance(err, (EndpointUnreachable, AttemptTimedOut)):
                        self.mark_down(ep)
                    if isinstance(err, AttemptTimedOut):
                        done = len(bodies) - len(pending)
                        raise self.error(
                            f"the consumer at {ep.address} did not answer the publish of {len(batch)} message(s) "
                            f"to queue {queue_name!r} in time ({err.detail}); it may still accept and run them, "
                            f"so they are not sent again (another copy could run twice)"
                            + (f"; {done} earlier message(s) of this publish were accepted" if done else ""),
                            code="DEADLINE_EXCEEDED") from err
                    last_error = err.detail
                    continue
                if ep.down_until:
                    ep.down_until = 0.0
                del pending[:accepted]
                progressed = progressed or accepted > 0
                if not pending:
                    return
            if not progressed:
                if time.monotonic() >= deadline:
                    raise self.no_consumer_error(
                        f"no consumer of queue {queue_name!r} accepted {len(pending)} message(s) within "
                        f"{time.monotonic() - start:.1f}s (publish_timeout={self.publish_timeout}s) at "
                        f"{[e.address for e in self.endpoints]}; last error: {last_error}", code="UNAVAILABLE")
                time.sleep(backoff)
                backoff = min(backoff * 2, 0.5)

    def call(self, queue_name: str, body: str, timeout: Optional[float]) -> Any:
        """Run one task on a consumer and return its result, or raise :attr:`remote_error`.

        A call goes to another consumer only when it surely did not run (refused, never connected).
        :raises RpcTimeout: no result within ``timeout``. :raises NoConsumerAvailable: nobody took it
            within ``publish_timeout``."""
        if (len(body) if body.isascii() else len(body.encode("utf-8"))) > self.max_body:
            self.check_size(body)  # raises
        request = self.prepare_call(queue_name, body)
        ep = self._single
        if ep is not None and not ep.down_until and timeout is not None and timeout > 0:
            # the common case, one live address: a single attempt without the balancing loop; any error
            # takes the general path below, which decides exactly as for a first attempt
            start = time.monotonic()
            try:
                reply = self.send_call(ep, request, timeout)
            except AttemptFailed as err:
                first_error: Optional[tuple[E, AttemptFailed]] = (ep, err)  # handled outside this except
            else:
                return result_of(decode_status(reply), self.remote_error)
            return self._call_loop(queue_name, request, timeout, start, first_error)
        return self._call_loop(queue_name, request, timeout, time.monotonic(), None)

    def _call_loop(self, queue_name: str, request: Any, timeout: Optional[float], start: float,
                   first_error: Optional[tuple[E, AttemptFailed]]) -> Any:
        deadline = start + (timeout if timeout is not None else self.publish_timeout + 3600.0)
        backoff = 0.02
        last_error = "no address configured"
        skip_round = first_error is not None  # the fast path's attempt was this round
        if first_error is not None:
            last_error = self._call_failed(queue_name, first_error[0], first_error[1], timeout)
        while True:
            for ep in (() if skip_round else self.order()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    reply = self.send_call(ep, request, remaining)
                except AttemptFailed as err:
                    last_error = self._call_failed(queue_name, ep, err, timeout)
                    continue
                if ep.down_until:
                    ep.down_until = 0.0
                return result_of(decode_status(reply), self.remote_error)
            skip_round = False
            if time.monotonic() >= deadline:
                raise RpcTimeout(f"sync_call on queue {queue_name!r}: no consumer took it within {timeout}s; "
                                 f"last error: {last_error}")
            if time.monotonic() >= start + self.publish_timeout:
                raise self.no_consumer_error(
                    f"no consumer of queue {queue_name!r} took the sync_call at "
                    f"{[e.address for e in self.endpoints]}; last error: {last_error}", code="UNAVAILABLE")
            time.sleep(backoff)
            backoff = min(backoff * 2, 0.5)

    def _call_failed(self, queue_name: str, ep: E, err: AttemptFailed, timeout: Optional[float]) -> str:
        """Raise for a failure that ends a sync_call; otherwise return its text (the caller tries another
        endpoint: the request surely did not run)."""
        if isinstance(err, AttemptTimedOut):
            raise RpcTimeout(f"sync_call on queue {queue_name!r} via {ep.address} did not finish "
                             f"within {timeout}s") from err
        if isinstance(err, EndpointUnreachable):
            self.mark_down(ep)
            if err.maybe_processed:
                # the consumer may have taken the task and died: running it elsewhere could run it twice,
                # so the caller decides
                raise self.error(f"the consumer at {ep.address} failed during sync_call: {err.detail}",
                                 code=err.code) from err
        return err.detail

    def each(self, fn: Callable[[E], Any]) -> list[Any]:
        """``fn(endpoint)`` for every endpoint that answers (failed attempts are skipped)."""
        out = []
        for ep in self.endpoints:
            try:
                out.append(fn(ep))
            except AttemptFailed:
                continue
        return out

    def stats(self, queue_name: str) -> Optional[tuple[int, int]]:
        """Sum of ``(ready, in_flight)`` over the consumers that answer; None when none does."""
        replies = self.each(lambda ep: self.send_stats(ep, queue_name))
        if not replies:
            return None
        return sum(r[0] for r in replies), sum(r[1] for r in replies)

    def purge(self, queue_name: str) -> int:
        """Purge the queue at every consumer that answers; the total dropped, or -1 when none answered."""
        replies = self.each(lambda ep: self.send_purge(ep, queue_name))
        return sum(replies) if replies else -1

    def close(self) -> None:
        self._closed = True
        for ep in self.endpoints:
            self.close_endpoint(ep)
