"""TIME columns as the binlog stores them (MySQL 5.6+ / MariaDB "TIME2"), decoded right.

mysql-replication (1.0.x) reads the 3 bytes of hours, minutes and seconds and the fraction bytes as two
unsigned numbers. MySQL writes the whole value, fraction included, as *one* signed fixed-point number, so a
negative TIME with a fraction came out wrong (``-12:34:56.789`` as ``-12:34:56.211``, ``-00:00:00.000001``
as ``-00:00:00.999999``). :func:`install` replaces that one reader with :func:`read_time2`.

The format: ``3 + n`` bytes big-endian, ``n = (fsp + 1) // 2`` fraction bytes; minus the offset
``0x800000 << 8n`` it is the signed number ``hms * 2**(8n) + fraction``, where ``hms`` packs
``hour << 12 | minute << 6 | second`` and the fraction counts 1/100 s (n = 1), 1/10,000 s (n = 2) or
microseconds (n = 3).
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any

__all__ = ["decode_time2", "install"]

log = logging.getLogger("funboost.mysql_cdc")

_MICROSECONDS_PER_UNIT = {0: 0, 1: 10_000, 2: 100, 3: 1}


def decode_time2(raw: bytes) -> dt.timedelta:
    """The TIME value of ``raw``, the column's ``3 + n`` bytes (n fraction bytes, 0 to 3)."""
    n = len(raw) - 3
    if n not in _MICROSECONDS_PER_UNIT:
        raise ValueError(f"a TIME2 value has 3 to 6 bytes, got {len(raw)}")
    value = int.from_bytes(raw, "big") - (0x800000 << (8 * n))
    magnitude = -value if value < 0 else value
    hms, fraction = magnitude >> (8 * n), magnitude & ((1 << (8 * n)) - 1)
    t = dt.timedelta(hours=(hms >> 12) & 0x3FF, minutes=(hms >> 6) & 0x3F, seconds=hms & 0x3F,
                     microseconds=fraction * _MICROSECONDS_PER_UNIT[n])
    return -t if value < 0 else t


def read_time2(self: Any, column: Any) -> dt.timedelta:
    """The reader installed on mysql-replication's ``RowsEvent`` (``self.packet`` is at the value)."""
    fsp = getattr(column, "fsp", 0) or 0
    return decode_time2(self.packet.read(3 + (fsp + 1) // 2))


def install() -> bool:
    """Put :func:`read_time2` in place of mysql-replication's TIME2 reader; False (and a warning) if this
    version of the library has no such reader to replace."""
    from pymysqlreplication import row_event

    name = "_RowsEvent__read_time2"  # the private method RowsEvent.__read_time2
    if not hasattr(row_event.RowsEvent, name):
        log.warning("mysql-replication has no RowsEvent.__read_time2 (a newer version?): negative TIME values "
                    "with a fraction are decoded by the library as it is")
        return False
    setattr(row_event.RowsEvent, name, read_time2)
    return True
