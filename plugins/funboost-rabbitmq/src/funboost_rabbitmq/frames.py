"""Our own AMQP 0-9-1 encoder for ``basic.publish``: the batch path writes the frames of a whole batch as
one ``bytes`` object instead of letting pika build 3 frame objects, a properties object and a method
object per message (pika's marshalling was most of the batch publish cost).

Wire format (AMQP 0-9-1, section 4.2): every frame is ``type:u8 channel:u16 size:u32 payload 0xCE``.

* method frame (type 1): ``class:u16=60 method:u16=40 ticket:u16=0 exchange:shortstr routing_key:shortstr
  bits:u8`` (mandatory / immediate, both 0). Identical for every message to one exchange and routing key,
  so it is built once per (exchange, routing key).
* content header frame (type 2): ``class:u16=60 weight:u16=0 body_size:u64 flags:u16 properties...``;
  the properties follow in flag order (content_type is bit 15 ... cluster_id bit 2), only those present.
* body frames (type 3): the body split into pieces of at most ``frame_max - 8`` bytes; none for an empty
  body.

``tests/test_frames.py`` checks the output byte for byte against pika's own marshalling.
"""
from __future__ import annotations

import struct
from typing import Any, Iterable, Optional, Sequence

from pika import data as _pika_data

FRAME_METHOD, FRAME_HEADER, FRAME_BODY = 1, 2, 3
FRAME_END = b"\xce"
FRAME_OVERHEAD = 8  # type + channel + size + frame end
BASIC_CLASS = 60
BASIC_PUBLISH = 40

_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
# frame header of a content header frame + class, weight, body size (the properties follow)
_HEADER_FRAME_START = struct.Struct(">BHIHHQ")
_FRAME_START = struct.Struct(">BHI")
# end of the previous frame + start of a body frame, packed in one go
_END_AND_BODY_START = struct.Struct(">BBHI")
_HEADER_PAYLOAD_FIXED = 12  # class + weight + body size


def shortstr(value: Any) -> bytes:
    """AMQP short string: u8 length + UTF-8 bytes (at most 255)."""
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(raw) > 255:
        raise ValueError(f"AMQP short string longer than 255 bytes: {raw[:40]!r}...")
    return bytes((len(raw),)) + raw


def encode_table(table: Optional[dict]) -> bytes:
    """AMQP field table (headers). Rare on the hot path (only messages with headers), so it is left to
    pika's field-value encoder, which defines how Python values map to AMQP field types."""
    pieces: list[bytes] = []
    _pika_data.encode_table(pieces, table)
    return b"".join(pieces)


def _octet(value: int) -> bytes:
    return bytes((value,))


def _timestamp(value: int) -> bytes:
    return _U64.pack(value)


# the properties of class Basic in wire order: (name, encoder); the first has flag bit 15, the last bit 2
_PROPERTIES = (
    ("content_type", shortstr), ("content_encoding", shortstr), ("headers", encode_table),
    ("delivery_mode", _octet), ("priority", _octet), ("correlation_id", shortstr), ("reply_to", shortstr),
    ("expiration", shortstr), ("message_id", shortstr), ("timestamp", _timestamp), ("type", shortstr),
    ("user_id", shortstr), ("app_id", shortstr), ("cluster_id", shortstr),
)
_PROPERTY_FLAGS = {name: 1 << (15 - i) for i, (name, _) in enumerate(_PROPERTIES)}


def encode_properties(**values: Any) -> bytes:
    """The property part of a content header frame (flags word + the present properties), as pika's
    ``BasicProperties`` would encode the same values. Keywords are the AMQP property names
    (content_type, content_encoding, headers, delivery_mode, priority, correlation_id, reply_to,
    expiration, message_id, timestamp, type, user_id, app_id, cluster_id); ``None`` = absent."""
    unknown = values.keys() - _PROPERTY_FLAGS.keys()
    if unknown:
        raise TypeError(f"unknown AMQP basic properties: {sorted(unknown)}")
    flags = 0
    parts: list[bytes] = []
    for name, encode in _PROPERTIES:
        value = values.get(name)
        if value is not None:
            flags |= _PROPERTY_FLAGS[name]
            parts.append(encode(value))
    # 14 flags fit in one 16-bit word, so the continuation bit (bit 0) is never set
    return _U16.pack(flags) + b"".join(parts)


class FixedProperties:
    """Encodes the properties funboost publishes with (content_type and delivery_mode fixed per broker,
    priority / message_id / headers per message) with a cached prefix: one dict lookup and one bytes
    concatenation per message when there are no headers."""

    __slots__ = ("content_type", "delivery_mode", "_prefixes")

    def __init__(self, content_type: Optional[str], delivery_mode: Optional[int]) -> None:
        self.content_type = content_type
        self.delivery_mode = delivery_mode
        # (priority, has message_id) -> flags word + content_type + delivery_mode + priority
        self._prefixes: dict[tuple[Optional[int], bool], bytes] = {}

    def encode(self, priority: Optional[int] = None, message_id: Optional[str] = None,
               headers: Optional[dict] = None) -> bytes:
        if headers is not None:
            return encode_properties(content_type=self.content_type, headers=headers,
                                     delivery_mode=self.delivery_mode, priority=priority,
                                     message_id=message_id)
        key = (priority, message_id is not None)
        prefix = self._prefixes.get(key)
        if prefix is None:
            # message_id is the last property present, so everything before it is fixed
            full = encode_properties(content_type=self.content_type, delivery_mode=self.delivery_mode,
                                     priority=priority, message_id="" if message_id is not None else None)
            prefix = self._prefixes[key] = full[:-1] if message_id is not None else full
        if message_id is None:
            return prefix
        mid = message_id.encode("utf-8")
        if len(mid) > 255:
            raise ValueError(f"message_id longer than 255 bytes: {message_id[:40]!r}...")
        return prefix + bytes((len(mid),)) + mid


def method_frame(channel: int, exchange: str, routing_key: str) -> bytes:
    """The complete ``basic.publish`` method frame (mandatory and immediate off)."""
    payload = (struct.pack(">HHH", BASIC_CLASS, BASIC_PUBLISH, 0) + shortstr(exchange)
               + shortstr(routing_key) + b"\x00")
    return _FRAME_START.pack(FRAME_METHOD, channel, len(payload)) + payload + FRAME_END


class PublishFrames:
    """Encodes ``basic.publish`` messages for one channel of one connection (its channel number and
    negotiated ``frame_max``). Messages are ``(exchange, routing_key, body, properties)`` tuples where
    ``properties`` comes from :func:`encode_properties` / :class:`FixedProperties`."""

    __slots__ = ("channel", "body_max", "_methods")

    def __init__(self, channel: int, frame_max: int) -> None:
        self.channel = channel
        self.body_max = frame_max - FRAME_OVERHEAD
        self._methods: dict[tuple[str, str], bytes] = {}

    def method(self, exchange: str, routing_key: str) -> bytes:
        key = (exchange, routing_key)
        frame = self._methods.get(key)
        if frame is None:
            if len(self._methods) > 1000:  # per-message routing keys: do not grow without bound
                self._methods.clear()
            frame = self._methods[key] = method_frame(self.channel, exchange, routing_key)
        return frame

    def encode(self, messages: Sequence[tuple[str, str, bytes, bytes]],
               indexes: Optional[Iterable[int]] = None) -> bytes:
        """All frames of ``messages`` (or of those at ``indexes``, in that order) as one bytes object."""
        ch = self.channel
        body_max = self.body_max
        methods = self._methods
        header_start = _HEADER_FRAME_START.pack
        end_and_body = _END_AND_BODY_START.pack
        parts: list[bytes] = []
        append = parts.append
        for i in (range(len(messages)) if indexes is None else indexes):
            exchange, routing_key, body, props = messages[i]
            frame = methods.get((exchange, routing_key))
            append(frame if frame is not None else self.method(exchange, routing_key))
            size = len(body)
            append(header_start(FRAME_HEADER, ch, _HEADER_PAYLOAD_FIXED + len(props), BASIC_CLASS, 0, size))
            append(props)
            if size == 0:
                append(FRAME_END)
            elif size <= body_max:
                append(end_and_body(0xCE, FRAME_BODY, ch, size))
                append(body)
                append(FRAME_END)
            else:
                append(FRAME_END)
                view = memoryview(body)
                for start in range(0, size, body_max):
                    piece = view[start:start + body_max]
                    append(_FRAME_START.pack(FRAME_BODY, ch, len(piece)))
                    append(bytes(piece))
                    append(FRAME_END)
        return b"".join(parts)
