"""Plugin discovery and the broker registry.

Broker kinds come from the entry-point group ``funboost.brokers``: the entry-point *name* is a kind name
or alias (``redis_ack_able``), the *value* is a Broker class (``pkg.mod:Cls``) or a module that implements
the ``funboost_register_brokers`` hook. Entry-point metadata is read without importing anything; a
plugin is imported the first time one of its kinds is used, and an import failure is reported with the
distribution's name without affecting any other broker.
"""
from __future__ import annotations

import importlib.metadata as importlib_metadata
import inspect
import logging
import sys
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Optional, cast

import pluggy

from funboost.exceptions import BrokerPluginError, UnknownBrokerKind
from funboost.plugins.broker import Broker
from funboost.plugins.distributions import (KINDS_WITHOUT_PLUGIN, SHIPPED_DISTRIBUTIONS,
                                            distribution_for_broker_kind)
from funboost.plugins.hookspecs import PROJECT_NAME, BrokerSpec, FunboostSpec, RegistrationSpec, hookimpl

logger = logging.getLogger("funboost.plugins")

BROKER_GROUP = "funboost.brokers"
PLUGIN_GROUP = "funboost.plugins"
STATE_GROUP = "funboost.state"

# kind -> distribution to install, derived from the one list of shipped distributions (kept for
# code that read this name; funboost.plugins.distributions is the source)
KNOWN_KIND_DISTRIBUTIONS: dict[str, str] = {kind: d.name for d in SHIPPED_DISTRIBUTIONS for kind in d.broker_kinds}


def normalize_kind(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise UnknownBrokerKind(f"broker_kind must be a non-empty string, got {name!r}")
    return name.strip().lower().replace("-", "_")


def original_kind_target(name: str) -> Optional[str]:
    """The kind that an original funboost kind *name* maps to when it is one of the variants
    ``BrokerEnum`` folds into another kind (``KAFKA_CONFLUENT`` -> ``KAFKA``, ``RABBITMQ_RABBITPY`` ->
    ``RABBITMQ``): the original's values are its names, so code and configuration written for it may spell
    the variant as a string. None for any other name."""
    from funboost.enums import BrokerEnum
    key = normalize_kind(name)
    for attr, value in vars(BrokerEnum).items():
        if not attr.startswith("_") and isinstance(value, str) and normalize_kind(attr) == key:
            target = normalize_kind(value)
            return target if target != key else None
    return None


def entry_points(group: str) -> list[importlib_metadata.EntryPoint]:
    """Entry points of ``group``, read from metadata without importing anything."""
    if sys.version_info >= (3, 10):
        return list(importlib_metadata.entry_points().select(group=group))
    # Python 3.9: entry points do not know their distribution; walk the distributions and remember it
    found = []
    for dist in importlib_metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == group:
                _py39_ep_dists[(ep.group, ep.name, ep.value)] = dist
                found.append(ep)
    return found


_py39_ep_dists: dict[tuple[str, str, str], Any] = {}


def _dist_of(ep: importlib_metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None) or _py39_ep_dists.get((ep.group, ep.name, ep.value))
    if dist is None:
        return ("unknown distribution", "")
    return (dist.metadata["Name"] or "unknown distribution", dist.version or "")


def find_entry_point(group: str, name: str) -> Optional[importlib_metadata.EntryPoint]:
    """The entry point of ``group`` named ``name`` (case- and ``-``/``_``-insensitive), without importing
    anything. Broker kinds and state backends are both looked up with it."""
    key = normalize_kind(name)
    for ep in entry_points(group):
        if normalize_kind(ep.name) == key:
            return ep
    return None


def entry_point_import_error(ep: importlib_metadata.EntryPoint, what: str, exc: BaseException) -> str:
    """The message for a plugin that failed to import: which entry point, which distribution, the error
    and the fix."""
    dist, version = _dist_of(ep)
    return (f"{what} {ep.name!r} from distribution {dist!r} {version} failed to import ({ep.value}): "
            f"{type(exc).__name__}: {exc}. Reinstall or upgrade it: pip install --upgrade {dist}")


class _MethodNamePluginManager(pluggy.PluginManager):
    """Treats a broker class's plain methods named like a BrokerSpec hook as implementations, so that
    pluggy validates their argument names without brokers having to decorate every method."""

    _spec_names = {n for n in dir(BrokerSpec) if not n.startswith("_")}

    def parse_hookimpl_opts(self, plugin: Any, name: str):  # type: ignore[override]
        if name in self._spec_names and callable(getattr(plugin, name, None)):
            return {}
        return None


class _RegistrationPluginManager(pluggy.PluginManager):
    """Calls a module-style entry point's ``funboost_register_brokers`` through pluggy (validated against
    :class:`RegistrationSpec`), whether or not the function carries the ``@hookimpl`` marker."""

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.add_hookspecs(RegistrationSpec)

    def parse_hookimpl_opts(self, plugin: Any, name: str):  # type: ignore[override]
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name == "funboost_register_brokers" and callable(getattr(plugin, name, None)):
            return {}
        return opts


def call_register_brokers(module: Any, registry: "BrokerRegistry", plugin_name: str) -> None:
    """Run ``module.funboost_register_brokers(registry=...)`` through pluggy; a hook whose argument names
    differ from the spec is a :class:`BrokerPluginError`."""
    pm = _RegistrationPluginManager()
    try:
        pm.register(module, name=plugin_name)
    except pluggy.PluginValidationError as exc:
        raise BrokerPluginError(f"{plugin_name}: funboost_register_brokers does not match the hookspec: {exc}")
    pm.hook.funboost_register_brokers(registry=registry)


# the data-path methods every broker writes itself (Broker's own raise NotImplementedError); purge too when
# the kind declares capabilities.purge
_REQUIRED_METHODS = ("publish", "fetch", "ack", "requeue", "queue_size")


def validate_broker_class(broker_cls: type) -> None:
    """Check a broker class against the hookspecs: it must derive from Broker, set ``kind`` and
    ``capabilities``, and every data-path method must take exactly the spec's argument names."""
    if not (inspect.isclass(broker_cls) and issubclass(broker_cls, Broker)):
        raise BrokerPluginError(f"{broker_cls!r} is not a subclass of funboost.plugins.broker.Broker")
    if not broker_cls.kind:
        raise BrokerPluginError(f"{broker_cls.__qualname__} does not set the class attribute 'kind'")
    pm = _MethodNamePluginManager(PROJECT_NAME)
    pm.add_hookspecs(BrokerSpec)
    # pluggy inspects bound methods: build an instance without running __init__
    probe = object.__new__(broker_cls)
    try:
        pm.register(probe, name=broker_cls.kind)
    except pluggy.PluginValidationError as exc:
        raise BrokerPluginError(f"broker class {broker_cls.__qualname__} does not match the hookspecs: {exc}")
    required = list(_REQUIRED_METHODS) + (["purge"] if getattr(broker_cls.capabilities, "purge", False) else [])
    missing_methods = [m for m in required if getattr(broker_cls, m, None) is getattr(Broker, m)]
    if missing_methods:
        raise BrokerPluginError(f"broker class {broker_cls.__qualname__} does not implement {missing_methods} "
                                f"(required: docs/writing-a-broker-plugin.md, 'Which methods are required')")
    for spec_name in _MethodNamePluginManager._spec_names:
        spec_args = inspect.signature(getattr(BrokerSpec, spec_name)).parameters
        impl_args = inspect.signature(getattr(broker_cls, spec_name)).parameters
        missing = [a for a in spec_args if a not in impl_args]
        if missing:
            raise BrokerPluginError(
                f"{broker_cls.__qualname__}.{spec_name} lacks argument(s) {missing} of the hookspec")


def _described(cls: type) -> str:
    dist = cls.__dict__.get("distribution")
    return f"{cls.__qualname__} ({dist})" if dist else cls.__qualname__


@dataclass
class BrokerInfo:
    kind: str
    aliases: tuple[str, ...]
    distribution: str
    version: str
    broker_cls: Optional[type[Broker]] = None
    error: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "aliases": list(self.aliases),
                             "distribution": self.distribution, "version": self.version}
        if self.broker_cls is not None:
            d["capabilities"] = self.broker_cls.capabilities.as_dict()
            d["options"] = sorted(self.broker_cls.options_model.model_fields)
        if self.error:
            d["error"] = self.error
        return d


class BrokerRegistry:
    """Maps every kind name and alias (normalized) to its Broker class, loading plugins lazily."""

    def __init__(self) -> None:
        self._by_name: dict[str, type[Broker]] = {}
        self._lock = threading.RLock()
        self._failed: dict[str, str] = {}  # entry point value -> error message
        self._current_dist: tuple[str, str] = ("", "")

    # ----- registration (called by plugins) -----
    def register(self, broker_cls: type[Broker], aliases: Iterable[str] = ()) -> type[Broker]:
        validate_broker_class(broker_cls)
        with self._lock:
            if self._current_dist[0] and not broker_cls.__dict__.get("distribution"):
                broker_cls.distribution, broker_cls.distribution_version = self._current_dist
            names = {normalize_kind(broker_cls.kind), *(normalize_kind(a) for a in broker_cls.aliases),
                     *(normalize_kind(a) for a in aliases)}
            for name in names:
                existing = self._by_name.get(name)
                if existing is None or existing is broker_cls:
                    continue
                new_dist, old_dist = broker_cls.__dict__.get("distribution"), existing.__dict__.get("distribution")
                if new_dist and old_dist and new_dist != old_dist:
                    # an installed plugin never silently takes over another distribution's kind (or core's)
                    raise BrokerPluginError(
                        f"broker kind name {name!r} of {broker_cls.__qualname__} (distribution {new_dist!r}) is "
                        f"already the kind of {existing.__qualname__} (distribution {old_dist!r}): a kind name "
                        f"belongs to one distribution; uninstall one of them or rename the kind")
            for name in names:
                existing = self._by_name.get(name)
                if existing is not None and existing is not broker_cls:  # (registered by code at run time)
                    logger.warning("broker kind %r: %s replaces %s", name, _described(broker_cls),
                                   _described(existing))
                self._by_name[name] = broker_cls
        return broker_cls

    # ----- lookup -----
    def resolve(self, kind: str) -> type[Broker]:
        name = normalize_kind(kind)
        cls = self._by_name.get(name)
        if cls is not None:
            return cls
        with self._lock:
            cls = self._by_name.get(name)
            if cls is not None:
                return cls
            ep = find_entry_point(BROKER_GROUP, name)
            if ep is not None:
                others = sorted({_dist_of(e)[0] for e in entry_points(BROKER_GROUP)
                                 if normalize_kind(e.name) == name} - {_dist_of(ep)[0]})
                if others:
                    raise BrokerPluginError(
                        f"broker kind {name!r} is declared by several distributions: {_dist_of(ep)[0]!r} and "
                        f"{', '.join(repr(o) for o in others)}; uninstall one of them")
                self._load_entry_point(ep, raise_errors=True)
                cls = self._by_name.get(name)
                if cls is None:  # a module-style plugin may register its class under kind only
                    raise BrokerPluginError(
                        f"entry point {ep.name!r} = {ep.value!r} of distribution "
                        f"{_dist_of(ep)[0]!r} did not register a broker named {ep.name!r}")
                return cls
        target = original_kind_target(name)
        if target is not None:  # the original funboost's name of a variant: the kind it maps to
            try:
                return self.resolve(target)
            except UnknownBrokerKind:
                raise UnknownBrokerKind(f"broker_kind {kind!r} is the original funboost's name of the kind "
                                        f"{target!r}: " + self._unknown_message(target)) from None
        raise UnknownBrokerKind(self._unknown_message(kind))

    def _load_entry_point(self, ep: importlib_metadata.EntryPoint, raise_errors: bool) -> None:
        dist, version = _dist_of(ep)
        if ep.value in self._failed:
            if raise_errors:
                raise BrokerPluginError(self._failed[ep.value])
            return
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must never take the others down
            msg = entry_point_import_error(ep, "broker plugin", exc)
            self._failed[ep.value] = msg
            logger.error(msg)
            if raise_errors:
                raise BrokerPluginError(msg) from exc
            return
        self._current_dist = (dist, version)
        try:
            if inspect.isclass(obj):
                cls = cast("type[Broker]", obj)  # register() validates that it is one
                if not cls.__dict__.get("distribution"):
                    cls.distribution, cls.distribution_version = dist, version
                self.register(cls, aliases=[ep.name])
            else:
                if not callable(getattr(obj, "funboost_register_brokers", None)):
                    raise BrokerPluginError(
                        f"entry point {ep.name!r} of {dist!r} points to {ep.value!r}, which is neither a "
                        f"Broker class nor a module with a funboost_register_brokers hook")
                call_register_brokers(obj, self, plugin_name=f"{dist}:{ep.value}")
                # a module's entry-point name is an alias of whatever it registered under that name
        except BrokerPluginError as exc:
            self._failed[ep.value] = f"{exc} (distribution {dist!r} {version})"
            if raise_errors:
                raise BrokerPluginError(self._failed[ep.value]) from exc
        finally:
            self._current_dist = ("", "")

    def installed(self, load: bool = True) -> list[BrokerInfo]:
        """Every broker kind that an installed distribution declares, grouped by class."""
        by_value: dict[str, list[importlib_metadata.EntryPoint]] = {}
        for ep in entry_points(BROKER_GROUP):
            by_value.setdefault(ep.value, []).append(ep)
        infos: list[BrokerInfo] = []
        seen_classes: set[type] = set()
        for value, eps in sorted(by_value.items(), key=lambda kv: kv[1][0].name):
            dist, version = _dist_of(eps[0])
            names = tuple(sorted(normalize_kind(e.name) for e in eps))
            if not load:
                infos.append(BrokerInfo(names[0], names, dist, version))
                continue
            with self._lock:
                self._load_entry_point(eps[0], raise_errors=False)
            if value in self._failed:
                infos.append(BrokerInfo(names[0], names, dist, version, error=self._failed[value]))
                continue
            classes = []
            for n in names:
                c = self._by_name.get(n)
                if c is not None and c not in classes:
                    classes.append(c)
            for c in classes:
                if c in seen_classes:
                    continue
                seen_classes.add(c)
                aliases = tuple(sorted(n for n, k in self._by_name.items() if k is c))
                infos.append(BrokerInfo(normalize_kind(c.kind), aliases, c.distribution or dist,
                                        c.distribution_version or version, broker_cls=c))
        declared_by: dict[str, set[str]] = {}
        for ep in entry_points(BROKER_GROUP):
            declared_by.setdefault(normalize_kind(ep.name), set()).add(_dist_of(ep)[0])
        for info in infos:  # a name two distributions declare: resolving it fails, so say so here too
            clash = sorted(n for n in info.aliases if len(declared_by.get(n, ())) > 1)
            if clash and not info.error:
                info.error = (f"kind name(s) {clash} also declared by "
                              f"{sorted(set().union(*(declared_by[n] for n in clash)) - {info.distribution})}")
        return infos

    def installed_names(self) -> list[str]:
        return sorted({normalize_kind(ep.name) for ep in entry_points(BROKER_GROUP)})

    def _unknown_message(self, kind: str) -> str:
        name = normalize_kind(kind)
        lines = [f"unknown broker_kind {kind!r}."]
        dist = distribution_for_broker_kind(name)
        if dist:
            lines.append(f"It is provided by the distribution {dist!r}: pip install {dist}.")
        elif name in KINDS_WITHOUT_PLUGIN:
            instead = KINDS_WITHOUT_PLUGIN[name]
            lines.append("It is a kind of the original funboost for which this project has no plugin"
                         + (f" ({instead})." if instead else "."))
        by_dist: dict[str, list[str]] = {}
        for ep in entry_points(BROKER_GROUP):
            by_dist.setdefault(_dist_of(ep)[0], []).append(ep.name)
        listing = "; ".join(f"{d}: {', '.join(sorted(n))}" for d, n in sorted(by_dist.items())) or "none"
        lines.append(f"Installed broker kinds: {listing}.")
        return " ".join(lines)


_registry = BrokerRegistry()


def get_broker_registry() -> BrokerRegistry:
    return _registry


def resolve_broker_kind(kind: str) -> type[Broker]:
    return _registry.resolve(kind)


# ---------------------------------------------------------------- cross-cutting plugins
_pm: Optional[pluggy.PluginManager] = None
_pm_lock = threading.Lock()


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager for cross-cutting hooks, with ``funboost.plugins`` loaded.

    A plugin that fails to import is logged with its distribution and skipped."""
    global _pm
    if _pm is not None:
        return _pm
    with _pm_lock:
        if _pm is not None:
            return _pm
        pm = pluggy.PluginManager(PROJECT_NAME)
        pm.add_hookspecs(FunboostSpec)
        for ep in entry_points(PLUGIN_GROUP):
            dist, version = _dist_of(ep)
            try:
                pm.register(ep.load(), name=f"{dist}:{ep.name}")
            except Exception as exc:
                logger.error("funboost plugin %r from distribution %r %s failed to load: %s: %s",
                             ep.name, dist, version, type(exc).__name__, exc)
        _report_unknown_hooks(pm)
        impls = pm.hook.funboost_execute.get_hookimpls()
        if impls and all(i.wrapper or i.hookwrapper for i in impls):
            # only wrappers: something must run the attempt inside them
            pm.register(_CoreExecute(), name=_CORE_EXECUTE)
        _pm = pm
        return pm


def _report_unknown_hooks(pm: pluggy.PluginManager) -> None:
    """A plugin's hook function whose name matches no hookspec (a typo) would never be called: say so (what
    pluggy's ``check_pending`` finds, each one logged with its plugin's distribution)."""
    for name in dir(pm.hook):
        caller = getattr(pm.hook, name)
        if name.startswith("_") or not isinstance(caller, pluggy.HookCaller) or caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if not getattr(impl, "optionalhook", False):
                logger.error("funboost plugin %r defines hook %r, which funboost does not have (a typo?): it is "
                             "never called; the hook names are in funboost.plugins.hookspecs", impl.plugin_name, name)


_CORE_EXECUTE = "funboost-core:execute"


class _CoreExecute:
    """The innermost ``funboost_execute`` when every plugin implements it as a wrapper
    (``@hookimpl(wrapper=True)``, ``return (yield)``): runs the attempt inside them. Not registered when a
    plugin's plain implementation calls ``call()`` itself (the attempt must run once)."""

    @hookimpl(trylast=True)
    def funboost_execute(self, queue_name: str, task: Any, call: Any) -> Any:
        return call()


def has_hook_impls(hook_name: str) -> bool:
    """Cheap check used at consumer/publisher start so that unused hooks cost nothing per message (core's
    own innermost ``funboost_execute`` does not count)."""
    impls = getattr(get_plugin_manager().hook, hook_name).get_hookimpls()
    return any(i.plugin_name != _CORE_EXECUTE for i in impls)
