"""Test helpers: free ports and a raw frame client (to send what a well-behaved client never would).
Consumer subprocesses for the failover tests are core's (funboost.testing.failover)."""
from __future__ import annotations

import json
import os
import socket
from typing import Any, Optional

from funboost.testing.failover import free_port  # noqa: F401  (re-exported for the tests)

from funboost_tcp import protocol as p



class RawClient:
    """A blocking socket speaking the frame format directly."""

    def __init__(self, port: int, host: str = "127.0.0.1", ca_file: Optional[str] = None) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        if ca_file is not None:  # TLS (the server's certificate is for "localhost")
            import ssl
            self.sock = ssl.create_default_context(cafile=ca_file).wrap_socket(self.sock, server_hostname="localhost")
        self.next_id = 1

    def send_frame(self, frame_type: int, payload: bytes, request_id: Optional[int] = None,
                   length: Optional[int] = None) -> int:
        rid = request_id if request_id is not None else self.next_id
        self.next_id += 1
        n = len(payload) if length is None else length
        self.sock.sendall(p.HEADER.pack(n, rid, frame_type) + payload)
        return rid

    def send(self, frame_type: int, obj: Any) -> int:
        return self.send_frame(frame_type, json.dumps(obj).encode())

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed by the server")
            buf += chunk
        return buf

    def read(self) -> tuple[int, int, Any]:
        """``(request_id, frame_type, decoded payload)`` of the next reply."""
        length, rid, frame_type = p.HEADER.unpack(self._read(p.HEADER_SIZE))
        return rid, frame_type, json.loads(self._read(length)) if length else None

    def request(self, frame_type: int, obj: Any) -> tuple[int, Any]:
        rid = self.send(frame_type, obj)
        got, frame_type, reply = self.read()
        assert got == rid
        return frame_type, reply

    def close(self) -> None:
        self.sock.close()


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
