"""Reading APScheduler job states without letting the store run code.

APScheduler's SQL and Redis job stores keep each job's state as a pickle, and unpickling runs whatever
callables the bytes name: whoever can write the job table or the Redis hash could run any code in every
scheduler process, in ``funboost jobs`` and in the web manager. funboost's stores (``make_job_store``) and
readers therefore load a state with :func:`load_job_state`, which resolves only the classes a job state of
funboost holds: APScheduler's triggers and their fields, ``datetime`` values, time zones (``zoneinfo``,
``pytz``, ``dateutil.tz``, ``tzlocal``) and a few plain value types. Anything else is refused with
:class:`UnsafeJobState` and the job is reported unreadable (or, in a scheduler, dropped by APScheduler with
a logged error), never run.

A job's ``func`` is stored as text (``module:function``); APScheduler imports it when it restores the job,
as it always has: a store is trusted to say *which* function a job calls, not to run code while it is read.
``FUNBOOST_APS_TRUSTED_MODULES`` (comma-separated module names) admits the classes of further modules, for
jobs whose arguments are objects of the user's own classes.
"""
from __future__ import annotations

import _compat_pickle
import functools
import io
import os
import pickle
from typing import Any, Callable

__all__ = ["UnsafeJobState", "load_job_state", "check_job_state", "guard_job_store"]

ENV_TRUSTED_MODULES = "FUNBOOST_APS_TRUSTED_MODULES"

#: modules whose classes (defined in that module) a job state may name
_CLASS_MODULE_PREFIXES = ("apscheduler.triggers",)
#: single names a job state may name, by module
_NAMES: dict[str, frozenset[str]] = {
    "datetime": frozenset({"date", "datetime", "time", "timedelta", "timezone"}),
    "zoneinfo": frozenset({"ZoneInfo"}),
    "pytz": frozenset({"_p", "_UTC"}),  # how pytz pickles its zones
    "builtins": frozenset({"set", "frozenset", "bytearray", "complex"}),
    "collections": frozenset({"OrderedDict"}),
    "decimal": frozenset({"Decimal"}),
    "uuid": frozenset({"UUID"}),
    "copyreg": frozenset({"_reconstructor"}),  # protocol 0/1 objects; the class itself is checked here too
    "_codecs": frozenset({"encode"}),  # how protocols 0-2 write bytes
}
#: zone classes: dateutil's (tzutc, tzoffset, tzfile…), tzlocal's and the pytz shim that tzlocal 3-4 returned
_CLASS_MODULES_OF_ZONES = ("dateutil.tz", "tzlocal", "pytz_deprecation_shim", "pytz")
#: what ``getattr`` may fetch while a state loads: ZoneInfo pickles as ``getattr(ZoneInfo, "_unpickle")``
_ATTRIBUTES = frozenset({"_unpickle"})


class UnsafeJobState(pickle.UnpicklingError):
    """A stored job state names something outside what a job state of funboost holds."""


def _trusted_modules() -> tuple[str, ...]:
    raw = os.environ.get(ENV_TRUSTED_MODULES, "")
    return tuple(m.strip() for m in raw.split(",") if m.strip())


def _in_module(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _guarded_getattr(obj: Any, name: str) -> Any:
    if not isinstance(obj, type) or name not in _ATTRIBUTES:
        raise UnsafeJobState(f"a job state may not fetch {name!r} of {obj!r}")
    return getattr(obj, name)


class _JobStateUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, trusted: tuple[str, ...]) -> None:
        super().__init__(io.BytesIO(data))
        self._trusted = trusted

    def find_class(self, module: str, name: str) -> Any:
        # protocols 0-2 name Python 2's modules (__builtin__, copy_reg); judge the names they stand for
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if module == "builtins" and name == "getattr":
            return _guarded_getattr
        if name in _NAMES.get(module, ()):
            return super().find_class(module, name)
        if _in_module(module, _CLASS_MODULE_PREFIXES + _CLASS_MODULES_OF_ZONES + self._trusted):
            obj = super().find_class(module, name)
            # a class defined there, not a function or a module it imported (apscheduler.util.ref_to_obj…)
            if isinstance(obj, type) and getattr(obj, "__module__", "") == module:
                return obj
        raise UnsafeJobState(f"a job state may not name {module}.{name} (not an APScheduler trigger, a date, "
                             f"a time zone or a plain value; {ENV_TRUSTED_MODULES} admits the classes of "
                             f"further modules)")


def load_job_state(data: bytes) -> Any:
    """Unpickle one stored job state, resolving only what a job state of funboost holds.

    :raises UnsafeJobState: it names anything else. :raises pickle.UnpicklingError: it is not a pickle."""
    return _JobStateUnpickler(bytes(data), _trusted_modules()).load()


def check_job_state(data: bytes) -> bytes:
    """``data`` itself once :func:`load_job_state` read it without objection (for APScheduler's own loader)."""
    load_job_state(data)
    return data


@functools.lru_cache(maxsize=None)
def guard_job_store(store_cls: type) -> type:
    """A subclass of APScheduler's SQL or Redis job store that checks every state before APScheduler
    restores it (``_reconstitute_job`` is where both unpickle)."""

    def _reconstitute_job(self: Any, job_state: bytes) -> Any:
        return parent(self, check_job_state(job_state))

    parent: Callable[[Any, bytes], Any] = store_cls._reconstitute_job  # type: ignore[attr-defined]
    return type(f"Guarded{store_cls.__name__}", (store_cls,), {"_reconstitute_job": _reconstitute_job,
                                                              "__module__": __name__})

