"""Queue names (and task / job ids) that contain ``/`` in the manager's URLs.

The pages link to ``/queues/<name>`` with the name percent-encoded (``a/b`` -> ``a%2Fb``), but the server
decodes the path before routing, so the router saw ``/queues/a/b``: two segments, no route. Two pieces:

* :class:`KeepEncodedSlashes` (ASGI middleware) decodes the path again from ``raw_path``, leaving ``%2F`` and
  ``%25`` encoded, so an encoded ``/`` stays inside its segment (``%25`` too: a name holding the text ``%2F``
  must not turn into a ``/``);
* the ``segment`` path convertor (``{queue:segment}``) matches one segment and decodes those two escapes in
  the parameter, so the handlers get the name as it is.
"""
from __future__ import annotations

import re
from typing import Any, Callable
from urllib.parse import quote, unquote

from starlette.convertors import Convertor, register_url_convertor

__all__ = ["KeepEncodedSlashes", "SegmentConvertor"]

_KEPT = re.compile(r"(%(?:2[fF]|25))")  # captured: re.split keeps them


def _decode_kept(value: str) -> str:
    """``%2F`` -> ``/`` and ``%25`` -> ``%`` in one pass (the rest was decoded by the middleware)."""
    return _KEPT.sub(lambda m: "%" if m.group(1) == "%25" else "/", value)


class SegmentConvertor(Convertor[str]):
    """One path segment that may hold an encoded ``/`` (see the module's docstring)."""

    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return _decode_kept(value)

    def to_string(self, value: str) -> str:
        return quote(str(value), safe="")


register_url_convertor("segment", SegmentConvertor())


class KeepEncodedSlashes:
    """ASGI middleware: re-decode ``scope["path"]`` from ``raw_path`` with ``%2F`` and ``%25`` left encoded
    (only when the raw path has one of them; every other request passes untouched)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        parts = _KEPT.split(raw.decode("utf-8", "replace")) if raw and b"%2" in raw else ()
        if len(parts) > 1:
            # the kept escapes are the odd items; decode the pieces between them
            path = "".join(part.upper() if i % 2 else unquote(part) for i, part in enumerate(parts))
            root = scope.get("root_path", "")
            if root and not path.startswith(root):
                path = root + path  # scope["path"] carries the root path (ASGI), raw_path may not
            scope = dict(scope, path=path)
        await self.app(scope, receive, send)
