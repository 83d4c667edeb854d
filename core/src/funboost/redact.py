"""Secrets out of what is shown: URLs and DSNs in logs, error messages, notices and the web catalog.

One place for it, so that every plugin hides a password the same way (the user-info password, query
parameters naming a secret, each URL of a comma-separated list, the ``password=`` of a libpq DSN).
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

#: an option or query-parameter name that holds a secret
SECRET_KEY = re.compile(r"pass(word|wd|phrase)?|secret|token|credential|api_?key|private|auth", re.I)


def _redact_one_url(url: str, mask: bool) -> tuple[str, bool]:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url, False
    if not parts.scheme:
        return url, False
    had = False
    netloc = parts.netloc
    if "@" in netloc and password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        if mask:
            netloc = f"{user}:***@{hostport}"
        else:
            netloc = f"{user}@{hostport}" if user else hostport
        had = True
    query = parts.query
    if query:  # redis://host/0?password=..., postgresql://h/db?password=...&sslpassword=...
        kept = []
        for pair in query.split("&"):
            key = pair.split("=", 1)[0]
            if SECRET_KEY.search(key) and "=" in pair and pair.split("=", 1)[1]:
                kept.append(f"{key}=***")
                had = True
            else:
                kept.append(pair)
        query = "&".join(kept)
    if not had:
        return url, False
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)), True


_DSN_SECRET = re.compile(r"(\b(?:pass(?:word|wd|phrase)?|sslpassword|secret|token)\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)


def redact_url(url: str, mask: bool = False) -> tuple[str, bool]:
    """``url`` without its secrets: the password of its user-info (dropped, or ``***`` with ``mask``),
    query parameters naming a secret (``?password=***``), every URL of a comma-separated list
    (``nats://u:p@h1,nats://u:p@h2``), and the ``password=`` of a libpq keyword DSN
    (``host=h user=u password=***``); True if there was one."""
    if "://" not in url:
        out, n = _DSN_SECRET.subn(lambda m: m.group(1) + "***", url)
        return (out, True) if n else (url, False)
    pieces = url.split(",") if url.count("://") > 1 else [url]
    had_any = False
    out_pieces = []
    for piece in pieces:
        safe, had = _redact_one_url(piece, mask)
        had_any |= had
        out_pieces.append(safe)
    return ",".join(out_pieces), had_any


def shown_url(url: str) -> str:
    """``url`` as it may appear in a log line, a notice or an error message: its secrets replaced by ``***``
    (so that the reader sees one was given), see :func:`redact_url`."""
    return redact_url(url, mask=True)[0]
