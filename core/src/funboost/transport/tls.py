"""TLS for a server transport from the certificate, key and CA *paths* its options name (never key
material in options): :func:`server_ssl_context` for a listening consumer (optionally requiring client
certificates), :func:`client_ssl_context` for a publisher."""
from __future__ import annotations

import ssl
from typing import Optional

__all__ = ["server_ssl_context", "client_ssl_context"]


def server_ssl_context(cert_file: str, key_file: str, client_ca_file: Optional[str] = None) -> ssl.SSLContext:
    """TLS (1.2 or later) for a listening consumer; with ``client_ca_file`` every client must present a
    certificate signed by that CA (an alternative to a token, see
    :func:`funboost.transport.security.require_token_for_bind`)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        ctx.load_verify_locations(cafile=client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_ssl_context(ca_file: Optional[str] = None, cert_file: Optional[str] = None,
                       key_file: Optional[str] = None) -> ssl.SSLContext:
    """TLS (1.2 or later) for a publisher: trust ``ca_file`` (else the system's CAs), verify the host name,
    and present ``cert_file``/``key_file`` when the consumer requires client certificates."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx
