"""Values that belong to one process: built lazily, rebuilt in a forked child.

Sockets, database connections and locks must not cross a ``fork``: two processes sharing one TCP stream
interleave their bytes, a sqlite connection's POSIX locks are released when *any* of its file descriptors
closes, and a lock held by a parent thread stays held forever in the child (that thread does not exist
there). Each cache below notices the fork and builds a fresh value in the child.

How a fork is noticed: ``os.register_at_fork`` bumps a generation counter in the child. Comparing an int
is much cheaper than calling ``os.getpid()`` on every access (a system call that shows in profiles of the
hot path). The hook also gives every cache a fresh lock, so a lock held by a parent thread at fork time
cannot deadlock the child.

What happens to the parent's value in the child: by default it is *kept referenced and never closed*,
because closing a handle inherited through fork can disturb the parent (sqlite's locks, a TLS session, a
``shutdown()`` on a shared socket) and dropping it would let a finalizer close it. A cache built with
``on_stale=`` hands the parent's value to that function instead, once, the first time the child uses the
cache; use it only for a close that leaves the sockets to the parent (e.g. a pool's ``reset``).

>>> from funboost.process_local import ProcessLocal, ProcessLocalDict
>>> client = ProcessLocal(lambda: make_client(url))        # doctest: +SKIP
>>> client.get()                                            # doctest: +SKIP
>>> channels: ProcessLocalDict[str, Channel] = ProcessLocalDict()
>>> channels.get_or_create(target, lambda: open_channel(target))   # doctest: +SKIP
"""
from __future__ import annotations

import os
import threading
import weakref
from typing import Callable, Dict, Generic, Hashable, List, Optional, Tuple, TypeVar

__all__ = ["ProcessLocal", "ProcessLocalDict", "fork_generation", "process_cached"]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_UNSET: object = object()


class _ForkState:
    generation = 0  # bumped in every forked child
    pid = os.getpid()  # for platforms without register_at_fork (no fork there either, but be safe)


_caches: "weakref.WeakSet[_Resettable]" = weakref.WeakSet()
# values inherited from a parent and not handed to an ``on_stale``: referenced so no finalizer closes them
_inherited: List[object] = []
_HAS_FORK_HOOK = hasattr(os, "register_at_fork")


class _Resettable:
    _lock: threading.RLock

    def _after_fork_in_child(self) -> None:
        self._lock = threading.RLock()


def fork_generation() -> int:
    """A number that changes in a forked child; compare it to know whether a value was built here."""
    if not _HAS_FORK_HOOK:  # pragma: no cover - Windows: no fork, but a pid check costs nothing here
        pid = os.getpid()
        if pid != _ForkState.pid:
            _ForkState.pid = pid
            _ForkState.generation += 1
    return _ForkState.generation


def _on_fork_in_child() -> None:
    _ForkState.generation += 1
    _ForkState.pid = os.getpid()
    for cache in list(_caches):
        cache._after_fork_in_child()


if _HAS_FORK_HOOK:
    os.register_at_fork(after_in_child=_on_fork_in_child)


class ProcessLocal(_Resettable, Generic[T]):
    """One value per process, built by ``factory`` on first use (once, even when threads race).

    :param factory: builds the value; called with no arguments, under this cache's lock.
    :param on_stale: called in a forked child with the parent's value, once, before the child's own value
        is built; default: the parent's value is kept referenced and never closed (see module doc).
    """

    def __init__(self, factory: Callable[[], T], *, on_stale: Optional[Callable[[T], None]] = None) -> None:
        self._factory = factory
        self._on_stale = on_stale
        self._lock = threading.RLock()
        self._value: object = _UNSET
        self._gen = fork_generation()
        _caches.add(self)

    def get(self) -> T:
        """This process's value, built now if needed."""
        if self._gen == _ForkState.generation and _HAS_FORK_HOOK:
            v = self._value
            if v is not _UNSET:
                return v  # type: ignore[return-value]
        with self._lock:
            self._drop_stale()
            if self._value is _UNSET:
                self._value = self._factory()
            return self._value  # type: ignore[return-value]

    def peek(self) -> Optional[T]:
        """This process's value if it was built here, else None (never builds)."""
        with self._lock:
            self._drop_stale()
            return None if self._value is _UNSET else self._value  # type: ignore[return-value]

    def clear(self) -> Optional[T]:
        """Forget this process's value and return it (the caller closes it if it wants to)."""
        with self._lock:
            self._drop_stale()
            v, self._value = self._value, _UNSET
            return None if v is _UNSET else v  # type: ignore[return-value]

    def _drop_stale(self) -> None:
        gen = fork_generation()
        if self._gen == gen:
            return
        old, self._value, self._gen = self._value, _UNSET, gen
        if old is not _UNSET:
            _dispose_inherited(old, self._on_stale)


class ProcessLocalDict(_Resettable, Generic[K, V]):
    """A per-process mapping: a forked child starts with an empty one (the parent's values are handled as
    in :class:`ProcessLocal`). Each value is built once per key, under the mapping's lock.

    :param on_stale: called in a forked child with each of the parent's values, once, at the child's
        first use of the mapping; default: they are kept referenced and never closed.
    """

    def __init__(self, *, on_stale: Optional[Callable[[V], None]] = None) -> None:
        self._on_stale = on_stale
        self._lock = threading.RLock()
        self._data: Dict[K, V] = {}
        self._gen = fork_generation()
        _caches.add(self)

    def get_or_create(self, key: K, factory: Callable[[], V]) -> V:
        """The value of ``key`` in this process, built by ``factory`` if absent."""
        if self._gen == _ForkState.generation and _HAS_FORK_HOOK:
            v = self._data.get(key, _UNSET)
            if v is not _UNSET:
                return v  # type: ignore[return-value]
        with self._lock:
            self._drop_stale()
            v = self._data.get(key, _UNSET)
            if v is _UNSET:
                v = self._data[key] = factory()
            return v  # type: ignore[return-value]

    def get(self, key: K) -> Optional[V]:
        with self._lock:
            self._drop_stale()
            return self._data.get(key)

    def pop(self, key: K) -> Optional[V]:
        """Forget ``key`` in this process and return its value (the caller closes it if it wants to)."""
        with self._lock:
            self._drop_stale()
            return self._data.pop(key, None)

    def pop_if(self, key: K, value: V) -> bool:
        """Forget ``key`` only while it still maps to ``value`` (a newer value stays)."""
        with self._lock:
            self._drop_stale()
            if self._data.get(key, _UNSET) is value:
                del self._data[key]
                return True
            return False

    def items(self) -> List[Tuple[K, V]]:
        """A snapshot of this process's entries."""
        with self._lock:
            self._drop_stale()
            return list(self._data.items())

    def values(self) -> List[V]:
        return [v for _, v in self.items()]

    def clear(self) -> List[V]:
        """Forget every entry of this process and return the values."""
        with self._lock:
            self._drop_stale()
            out = list(self._data.values())
            self._data.clear()
            return out

    def __len__(self) -> int:
        return len(self.items())

    def __contains__(self, key: object) -> bool:
        with self._lock:
            self._drop_stale()
            return key in self._data

    def _drop_stale(self) -> None:
        gen = fork_generation()
        if self._gen == gen:
            return
        old, self._data, self._gen = self._data, {}, gen
        for v in old.values():
            _dispose_inherited(v, self._on_stale)


def _dispose_inherited(value: object, on_stale: Optional[Callable]) -> None:
    if on_stale is None:
        _inherited.append(value)
        return
    try:
        on_stale(value)
    except Exception:  # a failing cleanup of the parent's leftovers must not break the child
        _inherited.append(value)


def process_cached(fn: Callable[..., V]) -> Callable[..., V]:
    """Decorator: like ``functools.cache`` (positional, hashable arguments), but one cache per process, so
    a forked child builds its own values. ``fn.cache`` is the underlying :class:`ProcessLocalDict`."""
    cache: ProcessLocalDict = ProcessLocalDict()

    def wrapper(*args: Hashable) -> V:
        return cache.get_or_create(args, lambda: fn(*args))

    wrapper.__name__ = getattr(fn, "__name__", "process_cached")
    wrapper.__qualname__ = getattr(fn, "__qualname__", wrapper.__name__)
    wrapper.__doc__ = fn.__doc__
    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    wrapper.cache = cache  # type: ignore[attr-defined]
    return wrapper
