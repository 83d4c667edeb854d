"""The nameko service process of one NAMEKO queue: ``python -m funboost_nameko.service SPEC_JSON``.

nameko needs eventlet's monkey-patching before anything else is imported, so it runs here, in a fresh
interpreter started by the funboost process that consumes the queue (never patched itself). This
process runs nameko's ``ServiceRunner`` with one generated service: its name is the queue, its one
``@rpc`` method (``method_name``) forwards each call over a Unix socket to the funboost process, where
funboost's runner runs the function with every control. The call's reply is the function's result.

nameko's rpc entrypoint acks a request only after the worker finished and the reply was sent, so a
request whose service process or funboost process dies before that comes back (at-least-once). This
process exits at once (without acking) when the funboost process goes away.

A warm stop (SIGTERM, or "stop" from the funboost process) must ack the requests whose workers finish
during it. nameko 2's ``QueueConsumer`` ends its consume loop, closing the AMQP connection, as soon as
the entrypoint's consumer is cancelled, which ``ServiceContainer.stop`` does *before* it waits for the
running workers; their acks then find no connection and are skipped (``QueueConsumer.ack_message``), so
RabbitMQ delivers the finished requests again. :class:`FunboostQueueConsumer` keeps the connection open
until every request it delivered was acked or requeued.
"""
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")  # said once in the docs, not per process

import eventlet  # noqa: E402

eventlet.monkey_patch()  # first: nameko's contract

import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from functools import partial  # noqa: E402
from typing import Any  # noqa: E402

from eventlet.queue import LightQueue  # noqa: E402
from nameko.containers import ContainerBeingKilled  # noqa: E402
from nameko.exceptions import MalformedRequest  # noqa: E402
from nameko.messaging import QueueConsumer  # noqa: E402
from nameko.rpc import Rpc, RpcConsumer  # noqa: E402
from nameko.runners import ServiceRunner  # noqa: E402

from funboost_nameko import wire  # noqa: E402

#: what the rpc method returns when the funboost consumer rejected the call (it is stopping): the request
#: goes back to the queue instead of being answered and acked
_REQUEUE = object()


class FunboostTaskFailed(Exception):
    """The funboost function failed for good (after funboost's retries): the caller's reply is this error."""


class FunboostQueueConsumer(QueueConsumer):
    """nameko's ``QueueConsumer`` whose connection outlives its cancelled consumers until the requests it
    delivered are settled (acked or requeued): a warm stop acks the requests that finish during it.

    Requests delivered on a connection that died since are not waited for: RabbitMQ gave them back when
    it closed (and their acks are skipped anyway). A stop that never ends (a worker that hangs) is cut off
    by the funboost process, which kills this process after its stop timeout.
    """

    def __init__(self) -> None:
        super().__init__()
        self._unsettled: dict[int, Any] = {}  # id(message) -> message, delivered and not acked / requeued

    def handle_message(self, provider: Any, body: Any, message: Any) -> None:
        self._unsettled[id(message)] = message  # the consumer thread, before any worker can settle it
        super().handle_message(provider, body, message)

    def ack_message(self, message: Any) -> None:
        try:
            super().ack_message(message)
        finally:
            self._unsettled.pop(id(message), None)

    def requeue_message(self, message: Any) -> None:
        try:
            super().requeue_message(message)
        finally:
            self._unsettled.pop(id(message), None)

    def _waits_for_settles(self) -> bool:
        for key, message in list(self._unsettled.items()):
            if not message.channel.connection:  # its connection is gone: RabbitMQ has it back already
                self._unsettled.pop(key, None)
        return bool(self._unsettled)

    def on_iteration(self) -> None:
        # nameko's own version stops (closing the connection) once no consumer is left; wait for the acks
        self._cancel_consumers_if_requested()
        if len(self._consumers) == 0 and not self._waits_for_settles():
            self.should_stop = True


class FunboostRpcConsumer(RpcConsumer):
    queue_consumer = FunboostQueueConsumer()


class FunboostRpc(Rpc):
    """nameko's ``@rpc`` entrypoint, with the raw call (args, kwargs, correlation id, redelivered flag) handed
    to the method as it came (the funboost process checks the arguments against the function), and
    ``_REQUEUE`` turned into a requeue of the request instead of a reply. Its requests are settled before
    a warm stop closes the connection (:class:`FunboostQueueConsumer`)."""

    rpc_consumer = FunboostRpcConsumer()

    def handle_message(self, body: Any, message: Any) -> None:
        try:
            args, kwargs = body["args"], body["kwargs"]
        except (KeyError, TypeError):
            raise MalformedRequest("Message missing `args` or `kwargs`")
        call = {"args": list(args), "kwargs": dict(kwargs),
                "correlation_id": message.properties.get("correlation_id"),
                "redelivered": bool(message.delivery_info.get("redelivered"))}
        try:
            self.container.spawn_worker(self, (call,), {}, context_data=self.unpack_message_headers(message),
                                        handle_result=partial(self.handle_result, message))
        except ContainerBeingKilled:
            self.rpc_consumer.requeue_message(message)

    def handle_result(self, message: Any, worker_ctx: Any, result: Any, exc_info: Any) -> Any:
        if exc_info is None and result is _REQUEUE:
            self.rpc_consumer.requeue_message(message)
            return None, None
        return super().handle_result(message, worker_ctx, result, exc_info)


class Forwarder:
    """Connections to the funboost process, one per running worker at most (kept for reuse)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.idle: LightQueue = LightQueue()

    def connect(self, role: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.path)
        wire.send(sock, {"role": role, "pid": os.getpid()})
        return sock

    def call(self, call: dict) -> Any:
        try:
            sock = self.idle.get_nowait()
        except Exception:
            sock = self.connect("worker")
        try:
            wire.send(sock, call)
            answer = wire.recv(sock)
        except (OSError, EOFError):
            os._exit(3)  # the funboost process is gone: die without acking, the request comes back
        self.idle.put(sock)
        verb = answer["verb"]
        if verb == "fail":
            raise FunboostTaskFailed(answer.get("error", ""))
        if verb == "reject":
            return _REQUEUE
        return answer.get("result")


def make_service(queue: str, method_name: str, forwarder: Forwarder) -> type:
    def method(self: Any, call: dict) -> Any:
        return forwarder.call(call)

    method.__name__ = method_name
    return type(f"FunboostService_{queue}", (), {"name": queue, method_name: FunboostRpc.decorator(method)})


def main(spec: dict) -> None:
    forwarder = Forwarder(spec["socket"])
    control = forwarder.connect("control")
    runner = ServiceRunner(spec["config"])
    runner.add_service(make_service(spec["queue"], spec["method_name"], forwarder))

    def watch_parent() -> None:  # EOF on the control pipe: the funboost process died
        try:
            while True:
                if wire.recv(control).get("stop"):
                    eventlet.spawn_n(runner.stop)
        except (OSError, EOFError, ValueError):
            os._exit(3)

    def on_term(signum: int, frame: Any) -> None:
        eventlet.spawn_n(runner.stop)  # warm: running workers end, are answered and acked

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    runner.start()
    eventlet.spawn_n(watch_parent)
    wire.send(control, {"ready": True})
    runner.wait()
    try:
        wire.send(control, {"stopped": True})
    except OSError:
        pass


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
