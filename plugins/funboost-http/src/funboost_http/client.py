"""The publisher side: keep-alive HTTP connection pools (urllib3) to every consumer address. Balancing,
failover, backoff and the probing of consumers marked down are core's
(:class:`funboost.transport.client.TransportClient`); this module is the HTTP framing: requests, statuses
and what each failure means for failover.

One :class:`HttpClient` per distinct connection configuration is shared by the whole process, so marks of
dead consumers and open connections are shared by every broker instance that talks to the same consumers.
"""
from __future__ import annotations

import json
import ssl
from typing import Any, Optional
from urllib.parse import quote

import urllib3
import urllib3.connection
from urllib3.exceptions import (ConnectTimeoutError, HTTPError, NewConnectionError, ProtocolError, ReadTimeoutError,
                                SSLError)

from funboost.process_local import ProcessLocalDict
from funboost.transport.client import Endpoint, TransportClient
from funboost.transport.errors import AttemptFailed, AttemptTimedOut, EndpointRefused, EndpointUnreachable
from funboost.transport.tls import client_ssl_context
from funboost_http.errors import HttpBrokerError, MessageTooLarge, NoConsumerAvailable, RemoteTaskError
from funboost_http.options import HttpOptions
from funboost_http.server import TIMEOUT_HEADER

#: seconds to open a connection: a consumer on a reachable host accepts at once; longer means it is gone
CONNECT_TIMEOUT = 3.0
_TIMEOUT_HEADER = TIMEOUT_HEADER.decode()


#: bodies up to this size go out in the same send() as the request head
ONE_PACKET_MAX = 64 * 1024


class _OneWrite:
    """Mixin for urllib3 connections: write the request head and a small body with one ``send``.

    urllib3 writes them separately; on loopback that is a second syscall here and, on the server, a
    second event-loop wake-up before the request can be handled (a measurable part of a sync_call)."""

    _hold = False
    _held: Optional[bytes] = None

    def request(self, method: str, url: str, body: Any = None, headers: Any = None, **kw: Any) -> None:
        self._hold = isinstance(body, bytes) and len(body) <= ONE_PACKET_MAX
        try:
            super().request(method, url, body=body, headers=headers, **kw)  # type: ignore[misc]
        finally:
            held, self._held, self._hold = self._held, None, False
            if held is not None:  # no body write followed the head (empty body)
                super().send(held)  # type: ignore[misc]

    def send(self, data: Any) -> None:
        if self._hold:
            if self._held is None:  # the head: keep it for the body's write
                self._held = bytes(data)
                return
            data, self._held, self._hold = self._held + data, None, False
        super().send(data)  # type: ignore[misc]


class OneWriteConnection(_OneWrite, urllib3.connection.HTTPConnection):
    """HTTP connection writing head and small body at once."""


class OneWriteHTTPSConnection(_OneWrite, urllib3.connection.HTTPSConnection):
    """HTTPS connection writing head and small body at once (one TLS record instead of two)."""


class HttpEndpoint(Endpoint):
    __slots__ = ("pool",)

    def __init__(self, address: str, pool: urllib3.HTTPConnectionPool) -> None:
        super().__init__(address)
        self.pool = pool


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _message(resp: urllib3.BaseHTTPResponse) -> str:
    try:
        obj = json.loads(resp.data)
        return f"{obj.get('error')}: {obj.get('message')}"
    except (ValueError, AttributeError):
        return resp.data[:200].decode("utf-8", "replace")


class HttpClient(TransportClient[HttpEndpoint]):
    error = HttpBrokerError
    no_consumer_error = NoConsumerAvailable
    too_large_error = MessageTooLarge
    remote_error = RemoteTaskError
    transport_name = "http"
    per_body_overhead = 1  # the comma between envelopes in a JSON list

    def __init__(self, options: HttpOptions) -> None:
        self.options = options
        base = {"content-type": "application/json"}
        if options.token:
            base["authorization"] = f"Bearer {options.token}"
        self.headers = base
        self._plain_headers = {k: v for k, v in base.items() if k != "content-type"}
        self._request_timeout = urllib3.Timeout(connect=min(CONNECT_TIMEOUT, options.request_timeout),
                                                read=options.request_timeout)
        # HTTPS: core's client context (TLS 1.2+, tls_ca_file or the system's CAs, host name checked, an
        # optional client certificate)
        self.ssl_context: Optional[ssl.SSLContext] = (
            client_ssl_context(options.tls_ca_file, options.tls_client_cert_file, options.tls_client_key_file)
            if options.client_tls else None)
        endpoints = []
        for address in options.target_addresses():
            host, port = _split(address)
            # block=False: more threads than pool_size open extra connections rather than wait for one
            pool: urllib3.HTTPConnectionPool
            if self.ssl_context is not None:
                pool = urllib3.HTTPSConnectionPool(host, port, maxsize=options.pool_size, block=False, retries=False,
                                                   timeout=self._request_timeout, ssl_context=self.ssl_context,
                                                   server_hostname=options.tls_server_name)
                pool.ConnectionCls = OneWriteHTTPSConnection
            else:
                pool = urllib3.HTTPConnectionPool(host, port, maxsize=options.pool_size, block=False, retries=False,
                                                  timeout=self._request_timeout)
                pool.ConnectionCls = OneWriteConnection
            endpoints.append(HttpEndpoint(address, pool))
        # the list brackets around a batch: 2 bytes of framing
        super().__init__(endpoints, max_body=options.max_message_bytes - 2, max_message_bytes=options.max_message_bytes,
                         publish_timeout=options.publish_timeout, health_check_interval=options.health_check_interval)

    # ----------------------------------------------------------------- one request
    def _request(self, ep: HttpEndpoint, method: str, path: str, body: Optional[bytes] = None,
                 timeout: Any = None, headers: Optional[dict] = None) -> urllib3.BaseHTTPResponse:
        """Send one request; raise what the failure means for failover (an :class:`AttemptFailed`)."""
        try:
            return ep.pool.urlopen(method, path, body=body, headers=headers or self.headers,
                                   timeout=timeout or self._request_timeout, retries=False, redirect=False,
                                   assert_same_host=False)
        except (NewConnectionError, ConnectTimeoutError) as err:  # never reached the consumer
            raise EndpointUnreachable(f"{ep.address}: UNAVAILABLE: {err}", "UNAVAILABLE") from None
        except SSLError as err:  # the TLS handshake failed: no request was sent
            raise EndpointUnreachable(f"{ep.address}: UNAVAILABLE: TLS: {err}", "UNAVAILABLE") from None
        except ReadTimeoutError:
            raise AttemptTimedOut(f"{ep.address}: TIMEOUT: no reply in time", "TIMEOUT") from None
        except (ProtocolError, HTTPError, OSError) as err:  # the connection broke after the request left
            raise EndpointUnreachable(f"{ep.address}: UNAVAILABLE: {err}", "UNAVAILABLE",
                                      maybe_processed=True) from None

    def _failed(self, ep: HttpEndpoint, resp: urllib3.BaseHTTPResponse) -> Exception:
        """What a non-2xx reply means: try another consumer, or the error that ends the operation."""
        status = resp.status
        detail = f"{ep.address}: {status}: {_message(resp)}"
        if status in (404, 503):  # does not host the queue / buffer full: another consumer may take it
            return EndpointRefused(detail, str(status))
        if status == 504:
            return AttemptTimedOut(detail, str(status))
        if status == 413:
            return self.too_large_error(f"the consumer at {ep.address} refused the body as too large: {detail}",
                                        code="413")
        return self.error(f"HTTP request to {ep.address} failed: {detail}", code=str(status))

    @staticmethod
    def _path(queue_name: str, suffix: str = "") -> str:
        return f"/queues/{quote(queue_name, safe='')}{suffix}"

    # ----------------------------------------------------------------- framing
    def send_publish(self, ep: HttpEndpoint, queue_name: str, bodies: list[str]) -> int:
        payload = ("[" + ",".join(bodies) + "]").encode("utf-8")
        resp = self._request(ep, "POST", self._path(queue_name, "/messages"), payload)
        if resp.status != 202:
            raise self._failed(ep, resp)
        return int(json.loads(resp.data)["accepted"])

    def prepare_call(self, queue_name: str, body: str) -> Any:
        return self._path(queue_name, "/call"), body.encode("utf-8")

    def send_call(self, ep: HttpEndpoint, request: Any, timeout: float) -> bytes:
        path, payload = request
        # the server gives up at the same time (never "0.000": that is not a valid timeout)
        headers = {**self.headers, _TIMEOUT_HEADER: f"{max(timeout, 0.001):.3f}"}
        resp = self._request(ep, "POST", path, payload, urllib3.Timeout(connect=min(CONNECT_TIMEOUT, timeout),
                                                                       read=timeout), headers)
        if resp.status != 200:
            raise self._failed(ep, resp)
        return resp.data

    def send_stats(self, ep: HttpEndpoint, queue_name: str) -> tuple[int, int]:
        resp = self._request(ep, "GET", self._path(queue_name), headers=self._plain_headers)
        if resp.status != 200:
            raise AttemptFailed(f"{ep.address}: {resp.status}: {_message(resp)}", str(resp.status))
        obj = json.loads(resp.data)
        return int(obj["ready"]), int(obj["in_flight"])

    def send_purge(self, ep: HttpEndpoint, queue_name: str) -> int:
        resp = self._request(ep, "DELETE", self._path(queue_name, "/messages"), headers=self._plain_headers)
        if resp.status != 200:
            raise AttemptFailed(f"{ep.address}: {resp.status}: {_message(resp)}", str(resp.status))
        return int(json.loads(resp.data)["purged"])

    def close_endpoint(self, ep: HttpEndpoint) -> None:
        ep.pool.close()

    # ----------------------------------------------------------------- health
    def check_health(self, ep: HttpEndpoint, timeout: float, queue_name: str = "") -> str:
        """``SERVING``, ``NOT_SERVING`` (up, but not hosting ``queue_name``), ``UNAUTHENTICATED`` or
        ``UNREACHABLE`` for ``GET /healthz`` at ``ep``."""
        path = "/healthz" + (f"?queue={quote(queue_name, safe='')}" if queue_name else "")
        try:
            resp = self._request(ep, "GET", path, timeout=urllib3.Timeout(connect=timeout, read=timeout),
                                 headers=self._plain_headers)
        except AttemptFailed:
            return "UNREACHABLE"
        if resp.status == 200:
            return "SERVING"
        if resp.status in (401, 403):
            return "UNAUTHENTICATED"
        return "NOT_SERVING" if resp.status == 503 else f"HTTP_{resp.status}"


# per process: connections must not cross a fork (a forked child opens its own)
_clients: ProcessLocalDict[tuple, HttpClient] = ProcessLocalDict()


def _client_key(options: HttpOptions) -> tuple:
    return (tuple(options.target_addresses()), options.token, options.max_message_bytes, options.publish_timeout,
            options.request_timeout, options.health_check_interval, options.pool_size, options.client_tls,
            options.tls_ca_file, options.tls_client_cert_file, options.tls_client_key_file, options.tls_server_name)


def get_client(options: HttpOptions) -> HttpClient:
    return _clients.get_or_create(_client_key(options), lambda: HttpClient(options))


def close_clients() -> None:
    """Close every connection this process opened to consumers (tests, interpreter shutdown)."""
    for c in _clients.clear():
        c.close()
