"""The wire format of the ``tcp`` kind: length-prefixed JSON frames, many requests multiplexed on one
connection by request id. Nothing on the wire is ever unpickled.

Every frame is a 9-byte header followed by ``length`` bytes of payload::

    length: uint32 big-endian | request_id: uint32 big-endian | type: uint8 | payload (UTF-8 JSON)

Requests (client to consumer; the payload is a JSON object, ``token`` when the consumer has one):

=========  ====  ==========================================================  ============================
type       code  payload                                                     OK reply payload
=========  ====  ==========================================================  ============================
PUBLISH    1     ``{"token", "queue", "bodies": [<envelope object>...]}``     ``{"accepted": n}`` (prefix)
CALL       2     ``{"token", "queue", "timeout": s|null, "body": <envelope>}``  the final status record
STATS      3     ``{"token", "queue"}``                                      ``{"ready", "in_flight", "capacity"}``
PURGE      4     ``{"token", "queue"}``                                      ``{"purged": n}``
PING       5     ``{"token", "queue"?}``                                     ``{"serving": bool}``
=========  ====  ==========================================================  ============================

Replies carry the request's id and type ``OK`` (128) or ``ERROR`` (129) with ``{"code", "message"}``;
codes: :data:`ERROR_CODES`. Replies may come in any order.
"""
from __future__ import annotations

import struct

HEADER = struct.Struct(">IIB")
HEADER_SIZE = HEADER.size

PUBLISH, CALL, STATS, PURGE, PING = 1, 2, 3, 4, 5
OK, ERROR = 128, 129
REQUEST_TYPES = {PUBLISH: "PUBLISH", CALL: "CALL", STATS: "STATS", PURGE: "PURGE", PING: "PING"}

UNAUTHENTICATED = "UNAUTHENTICATED"  # missing or wrong token
BAD_REQUEST = "BAD_REQUEST"  # not JSON, not an object, wrong fields, unknown frame type, not an envelope
NOT_FOUND = "NOT_FOUND"  # the consumer does not host the queue
BACKPRESSURE = "BACKPRESSURE"  # the queue's buffer is full: try another consumer
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"  # a call did not finish before its timeout
TOO_LARGE = "TOO_LARGE"  # the frame is larger than max_frame_bytes
INTERNAL = "INTERNAL"
ERROR_CODES = (UNAUTHENTICATED, BAD_REQUEST, NOT_FOUND, BACKPRESSURE, DEADLINE_EXCEEDED, TOO_LARGE, INTERNAL)

#: bytes asked of one ``recv`` by the blocking readers (client and threaded server). ``recv(n)`` allocates
#: n bytes before it reads; above glibc's mmap threshold (128 KiB) that is a fresh mapping per read, shrunk
#: and unmapped again (mmap, mremap, munmap and a page fault around every reply: ~25 us of system time per
#: sequential call, measured). 64 KiB comes from the heap. The server reads the rest of a longer frame in one call.
READ_SIZE = 64 * 1024


def frame(request_id: int, frame_type: int, payload: bytes) -> bytes:
    """One frame: the header then ``payload``."""
    return HEADER.pack(len(payload), request_id, frame_type) + payload
