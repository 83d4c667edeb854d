"""Security settings every server transport applies the same way (tcp, http; framing-free):

* :func:`check_bind` – a consumer binds loopback unless told otherwise, and a non-loopback bind refuses to
  start without a shared token or TLS client certificates;
* :class:`TokenCheck` – the constant-time comparison of the token a request carries;
* :func:`server_ssl_context` / :func:`client_ssl_context` – ``ssl.SSLContext`` objects from certificate,
  key and CA file paths (the options of a transport name paths, never key material).
"""
from __future__ import annotations

import hmac
import ipaddress
import ssl
from typing import Optional, Union

__all__ = ["InsecureBind", "is_loopback_host", "check_bind", "TokenCheck", "server_ssl_context",
           "client_ssl_context"]


class InsecureBind(ValueError):
    """A consumer was asked to listen beyond loopback without any way to authenticate publishers."""


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``); False for anything that
    other hosts may reach (``0.0.0.0``, ``::``, a LAN address, a host name)."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve to anything
        return False


def check_bind(transport: str, host: str, token: Optional[str], tls_client_ca_file: Optional[str] = None) -> None:
    """Refuse to listen on a non-loopback ``host`` unless publishers must authenticate (a ``token``, or
    TLS with client certificates checked against ``tls_client_ca_file``).

    :raises InsecureBind: with a message that says which option to set."""
    if is_loopback_host(host) or token or tls_client_ca_file:
        return
    raise InsecureBind(
        f"funboost {transport}: refusing to listen on {host!r} without authentication: anyone who can reach "
        f"this port could run tasks. Set a shared `token` (on consumers and publishers) or TLS client "
        f"certificates (`tls_client_ca_file`), or bind 127.0.0.1.")


class TokenCheck:
    """Compares the token of each request with the expected one in constant time. With no expected
    token every request passes (loopback only, see :func:`check_bind`)."""

    __slots__ = ("expected",)

    def __init__(self, token: Optional[str]) -> None:
        self.expected: Optional[bytes] = token.encode("utf-8") if token else None

    def __call__(self, got: Union[str, bytes, None]) -> bool:
        expected = self.expected
        if expected is None:
            return True
        if got is None:
            return False
        if isinstance(got, str):
            got = got.encode("utf-8", "surrogatepass")
        elif not isinstance(got, bytes):
            return False
        return hmac.compare_digest(got, expected)


def server_ssl_context(cert_file: str, key_file: str, client_ca_file: Optional[str] = None) -> ssl.SSLContext:
    """TLS for a listening consumer; with ``client_ca_file`` every client must present a certificate
    signed by that CA."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        ctx.load_verify_locations(cafile=client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_ssl_context(ca_file: Optional[str] = None, cert_file: Optional[str] = None,
                       key_file: Optional[str] = None) -> ssl.SSLContext:
    """TLS for a publisher: trust ``ca_file`` (else the system's CAs), verify the host name, and present
    ``cert_file``/``key_file`` when the consumer requires client certificates."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx
