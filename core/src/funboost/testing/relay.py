"""A byte relay for tests that put a fault between a client and a real server on loopback (a refused port
that later forwards to the server, a first handshake garbled in transit): :func:`pump` copies one
direction of a connection, :func:`forward` joins an accepted connection to an upstream address."""
from __future__ import annotations

import socket
import threading

__all__ = ["pump", "forward"]


def pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy bytes from ``src`` to ``dst`` until either side closes, then shut both down."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def forward(conn: socket.socket, upstream: tuple[str, int]) -> socket.socket:
    """Connect to ``upstream`` and relay both directions between it and ``conn`` in daemon threads; return
    the upstream socket (for the caller to close)."""
    server = socket.create_connection(upstream)
    for a, b in ((conn, server), (server, conn)):
        threading.Thread(target=pump, args=(a, b), daemon=True).start()
    return server
