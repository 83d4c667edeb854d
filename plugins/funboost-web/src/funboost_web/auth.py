"""Users, roles, password hashing, API tokens and login rate limiting of the web manager.

Everything is kept in the state backend's document collections (so that several manager processes
share them): ``web_users`` (username -> role and scrypt hash), ``web_tokens`` (sha256 of a token -> its
name, role, creator), ``web_sessions`` (sha256 of a session id -> its user; deleted at logout, so that a
signed cookie stops working on the server's side), ``web_config`` (the session-signing key). Passwords are never stored: only
``scrypt(password, salt, n=2**15, r=8, p=1)``; API tokens are random 256-bit strings, stored as their
SHA-256 (they are not guessable, so a slow hash would only cost time on every API call).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

USERS = "web_users"
TOKENS = "web_tokens"
SESSIONS = "web_sessions"
CONFIG = "web_config"
ROLES = ("viewer", "operator", "admin")
_RANK = {r: i for i, r in enumerate(ROLES)}

# scrypt cost: ~50 ms and 32 MB per check on this class of machine; stored with each hash so that it can
# be raised later without invalidating old hashes
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 1


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=128 * 1024 * 1024, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${dk.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        algo, n, r, p, salt, want = stored.split("$")
        if algo != "scrypt":
            return False
        dk = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                            maxmem=128 * 1024 * 1024, dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(dk.hex(), want)


def role_at_least(role: Optional[str], needed: str) -> bool:
    return role in _RANK and _RANK[role] >= _RANK[needed]


@dataclass
class Principal:
    """Who is calling: a logged-in user (``via`` "session") or an API token (``via`` "token")."""

    name: str
    role: str
    via: str

    def can(self, needed: str) -> bool:
        return role_at_least(self.role, needed)


class UserStore:
    def __init__(self, state: Any) -> None:
        self.state = state

    # ---- users
    def users(self) -> dict[str, dict]:
        return {k: {kk: vv for kk, vv in v.items() if kk != "hash"} for k, v in self.state.doc_list(USERS).items()}

    def get(self, name: str) -> Optional[dict]:
        return self.state.doc_get(USERS, name)

    def set_user(self, name: str, password: str, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        if not name or len(password) < 8:
            raise ValueError("a user needs a name and a password of at least 8 characters")
        self.state.doc_put(USERS, name, {"role": role, "hash": hash_password(password), "created": time.time()})

    def delete_user(self, name: str) -> bool:
        return self.state.doc_delete(USERS, name)

    def check(self, name: str, password: str) -> Optional[Principal]:
        u = self.get(name)
        if u is None:
            verify_password(password, _DUMMY_HASH)  # same cost whether or not the user exists
            return None
        return Principal(name, u["role"], "session") if verify_password(password, u["hash"]) else None

    def ensure_admin(self, password: Optional[str]) -> Optional[str]:
        """On the first start (no user yet) create ``admin``: with ``password`` when given, else a random
        one, which is returned so that the caller prints it once. None when users exist already (then a
        given password resets admin's, so that a lost password can be replaced from the command line)."""
        if self.state.doc_list(USERS):
            if password:
                self.set_user("admin", password, "admin")
            return None
        pw = password or secrets.token_urlsafe(12)
        self.set_user("admin", pw, "admin")
        return None if password else pw

    # ---- tokens
    def create_token(self, name: str, role: str, by: str) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        token = "fbw_" + secrets.token_urlsafe(32)
        key = hashlib.sha256(token.encode()).hexdigest()
        self.state.doc_put(TOKENS, key, {"name": name, "role": role, "by": by, "created": time.time(),
                                         "id": key[:12]})
        return token

    def tokens(self) -> list[dict]:
        return sorted(self.state.doc_list(TOKENS).values(), key=lambda t: t.get("created", 0))

    def revoke_token(self, token_id: str) -> bool:
        for key, t in self.state.doc_list(TOKENS).items():
            if t.get("id") == token_id:
                return self.state.doc_delete(TOKENS, key)
        return False

    def check_token(self, token: str) -> Optional[Principal]:
        t = self.state.doc_get(TOKENS, hashlib.sha256(token.encode()).hexdigest())
        return Principal(f"token:{t['name']}", t["role"], "token") if t else None

    # ---- login sessions: one document per session (per browser), so that logging out ends that one only
    def open_session(self, name: str, max_age: float) -> str:
        """A new session of ``name``, open for ``max_age`` seconds from now (never extended: a document
        written once cannot be brought back by a request racing the logout); returns its id, kept in the
        signed cookie and stored here only as its SHA-256."""
        sid = secrets.token_urlsafe(32)
        self.state.doc_put(SESSIONS, _digest(sid), {"user": name, "created": time.time()}, ttl=max_age)
        return sid

    def session_alive(self, sid: Any, name: str) -> bool:
        """Whether session ``sid`` of ``name`` is open: not logged out, not expired."""
        if not isinstance(sid, str) or not sid:
            return False
        doc = self.state.doc_get(SESSIONS, _digest(sid))
        return doc is not None and doc.get("user") == name

    def close_session(self, sid: str) -> bool:
        return self.state.doc_delete(SESSIONS, _digest(sid))

    # ---- the session-signing key (shared by every manager process on this state backend)
    def session_secret(self) -> str:
        doc = self.state.doc_get(CONFIG, "session")
        if doc is None:
            doc = {"key": secrets.token_hex(32)}
            self.state.doc_put(CONFIG, "session", doc)
            doc = self.state.doc_get(CONFIG, "session") or doc
        return doc["key"]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


_DUMMY_HASH = hash_password(secrets.token_hex(8), n=2 ** 14)


class LoginLimiter:
    """At most ``max_failures`` failed logins per ``window`` seconds for a client address and for a user
    name; further attempts are refused (HTTP 429) until the oldest failure leaves the window."""

    def __init__(self, max_failures: int = 5, window: float = 300.0) -> None:
        self.max_failures = max_failures
        self.window = window
        self._fails: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> list[float]:
        lst = [t for t in self._fails.get(key, []) if now - t < self.window]
        self._fails[key] = lst
        return lst

    def retry_after(self, *keys: str) -> float:
        """Seconds until another attempt is allowed for these keys (0: allowed now)."""
        now = time.monotonic()
        with self._lock:
            waits = [self.window - (now - lst[0]) for k in keys
                     if len(lst := self._recent(k, now)) >= self.max_failures]
        return max(waits, default=0.0)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for k in keys:
                self._recent(k, now).append(now)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self._fails.pop(k, None)
