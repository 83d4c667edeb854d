"""The pipe between the nameko service process and the funboost process that owns it: length-prefixed
JSON frames on a Unix socket. Imports neither eventlet nor funboost (both sides use it)."""
from __future__ import annotations

import json
import socket
import struct
from typing import Any

_LEN = struct.Struct("!I")


def send(sock: socket.socket, obj: Any) -> None:
    data = json.dumps(obj, default=repr).encode()
    sock.sendall(_LEN.pack(len(data)) + data)


def _exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("the other side closed the pipe")
        buf += chunk
    return bytes(buf)


def recv(sock: socket.socket) -> Any:
    (n,) = _LEN.unpack(_exactly(sock, _LEN.size))
    return json.loads(_exactly(sock, n))
