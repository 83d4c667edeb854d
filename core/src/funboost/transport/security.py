"""Security defaults shared by the server transports (tcp, http…): where a consumer may listen without a
token, and the constant-time token check.

A consumer listens on loopback unless told otherwise; a bind that other hosts can reach refuses to start
without a shared token (or, for transports that support it, TLS client certificates), so a port opened by
mistake never runs tasks for anyone on the network.
"""
from __future__ import annotations

import hmac
import ipaddress
import socket
from typing import Optional, Union

__all__ = ["InsecureBind", "is_loopback_host", "require_token_for_bind", "token_matches"]


class InsecureBind(ValueError):
    """A server transport was asked to listen on a non-loopback address without a token."""


def is_loopback_host(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine (127.0.0.0/8, ::1, ``localhost``).

    A wildcard (``0.0.0.0``, ``::``, ``""``) and any other address are reachable from the network. A name
    is resolved: it is loopback only when every address it resolves to is."""
    h = host.strip().strip("[]")
    if h in ("", "0.0.0.0", "::", "*"):
        return False
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(h, None)
    except OSError:
        return False  # unknown name: the bind will fail anyway; never call it loopback
    addrs = {info[4][0] for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(str(a).split("%", 1)[0]).is_loopback for a in addrs)


def require_token_for_bind(transport: str, host: str, token: Optional[str], tls_client_auth: bool = False) -> None:
    """Refuse to listen on a non-loopback ``host`` without a token (or TLS client certificates).

    :raises InsecureBind: with what to set."""
    if token or tls_client_auth or is_loopback_host(host):
        return
    raise InsecureBind(
        f"funboost {transport}: refusing to listen on {host!r} without a token: anyone who can reach this "
        f"address could run tasks. Set the option 'token' (or FUNBOOST_{transport.upper()}_TOKEN) on the "
        f"consumer and its publishers, or listen on 127.0.0.1.")


def token_matches(presented: Union[str, bytes, None], expected: bytes) -> bool:
    """Constant-time comparison of a presented credential with the expected one (both as sent on the wire,
    e.g. ``b"Bearer <token>"``)."""
    if presented is None:
        return False
    got = presented.encode("utf-8", "surrogateescape") if isinstance(presented, str) else presented
    return hmac.compare_digest(got, expected)
