"""The original funboost's configuration classes (the module keeps the original's spelling), and the
pick-up of a user's ``funboost_config.py``.

A project written for the original has a ``funboost_config.py`` on its import path (its root or
PYTHONPATH) with ``class BrokerConnConfig`` and ``class FunboostCommonConfig``. When one is importable, its
settings are read once per process (the first booster, state backend or CLI command does it), mapped to
the environment variables this project reads (``REDIS_URL`` → ``FUNBOOST_REDIS_URL`` ...), and copied onto
the classes below; a one-time notice lists what was mapped. Environment variables already set win.
Nothing is ever written into the user's project (the original copies a template there; this project does
not). ``FUNBOOST_NO_CONFIG_FILE=1`` turns the pick-up off.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
import warnings
from typing import Any, Callable, Optional
from urllib.parse import quote

logger = logging.getLogger("funboost.config")


class BrokerConnConfig:
    """Connection settings of the original's ``funboost_config.py`` (None: not set). After the pick-up,
    the attributes the user's file sets are copied here, so code that reads them keeps working."""

    REDIS_HOST: Any = None
    REDIS_USERNAME: Any = None
    REDIS_PASSWORD: Any = None
    REDIS_PORT: Any = None
    REDIS_DB: Any = None
    REDIS_DB_FILTER_AND_RPC_RESULT: Any = None
    REDIS_SSL: Any = None
    REDIS_URL: Any = None
    RABBITMQ_USER: Any = None
    RABBITMQ_PASS: Any = None
    RABBITMQ_HOST: Any = None
    RABBITMQ_PORT: Any = None
    RABBITMQ_VIRTUAL_HOST: Any = None
    RABBITMQ_URL: Any = None
    KAFKA_BOOTSTRAP_SERVERS: Any = None
    KFFKA_SASL_CONFIG: Any = None
    SQLACHEMY_ENGINE_URL: Any = None
    MYSQL_HOST: Any = None
    MYSQL_PORT: Any = None
    MYSQL_USER: Any = None
    MYSQL_PASSWORD: Any = None
    MYSQL_DATABASE: Any = None
    SQLLITE_QUEUES_PATH: Any = None
    MQTT_HOST: Any = None
    MQTT_TCP_PORT: Any = None
    NATS_URL: Any = None
    CELERY_BROKER_URL: Any = None
    CELERY_RESULT_BACKEND: Any = None
    DRAMATIQ_URL: Any = None
    POSTGRES_DSN: Any = None
    MONGO_CONNECT_URL: Any = None


class FunboostCommonConfig:
    """Common settings of the original's ``funboost_config.py``. ``FUNBOOST_PROMPT_LOG_LEVEL`` sets the level
    of funboost's own ``funboost`` logger; the others are kept for code that reads them."""

    NB_LOG_FORMATER_INDEX_FOR_CONSUMER_AND_PUBLISHER: Any = None
    TIMEZONE: Any = None
    SHOW_HOW_FUNBOOST_CONFIG_SETTINGS: Any = None
    FUNBOOST_PROMPT_LOG_LEVEL: Any = None
    KEEPALIVETIMETHREAD_LOG_LEVEL: Any = None


# values of the original's template that mean "not configured" here (mapping them would point this project
# at a folder a normal user cannot create)
_TEMPLATE_DEFAULTS = {"SQLLITE_QUEUES_PATH": "/sqllite_queues"}


def _redis_url(c: Any, db_attr: str) -> Optional[str]:
    url = getattr(c, "REDIS_URL", None)
    host = getattr(c, "REDIS_HOST", None)
    if url and host and str(url) == _unquoted_redis_template(c):
        # the original's template (f"redis://{REDIS_USERNAME}:{REDIS_PASSWORD}@{REDIS_HOST}:...") puts the
        # password in unquoted: "p@ss:w/rd#1" made a URL that does not parse. Same fields: built quoted below
        url = None
    if url and db_attr == "REDIS_DB":
        return str(url)
    if not host and not url:
        return None
    if url and not host:  # REDIS_URL only: the other db on the same server
        base = str(url).rsplit("/", 1)[0] if str(url).count("/") > 2 else str(url)
        db = getattr(c, db_attr, None)
        return f"{base}/{db}" if db is not None else None
    user, password = getattr(c, "REDIS_USERNAME", None) or "", getattr(c, "REDIS_PASSWORD", None) or ""
    auth = f"{quote(str(user), safe='')}:{quote(str(password), safe='')}@" if (user or password) else ""
    scheme = "rediss" if getattr(c, "REDIS_SSL", False) else "redis"
    db = getattr(c, db_attr, None)
    return f"{scheme}://{auth}{host}:{getattr(c, 'REDIS_PORT', None) or 6379}/{db if db is not None else 0}"


def _unquoted_redis_template(c: Any) -> str:
    return (f"redis://{getattr(c, 'REDIS_USERNAME', None) or ''}:{getattr(c, 'REDIS_PASSWORD', None) or ''}@"
            f"{getattr(c, 'REDIS_HOST', None)}:{getattr(c, 'REDIS_PORT', None) or 6379}/{getattr(c, 'REDIS_DB', 0)}")


def _rabbitmq_url(c: Any) -> Optional[str]:
    url = getattr(c, "RABBITMQ_URL", None)
    template = (f"amqp://{getattr(c, 'RABBITMQ_USER', None)}:{getattr(c, 'RABBITMQ_PASS', None)}@"
                f"{getattr(c, 'RABBITMQ_HOST', None)}:{getattr(c, 'RABBITMQ_PORT', None)}/"
                f"{getattr(c, 'RABBITMQ_VIRTUAL_HOST', None)}")
    if url and str(url) != template:  # the original's template, unquoted: built from the fields below
        return str(url)
    host = getattr(c, "RABBITMQ_HOST", None)
    if not host:
        return None
    user = quote(str(getattr(c, "RABBITMQ_USER", None) or "guest"), safe="")
    password = quote(str(getattr(c, "RABBITMQ_PASS", None) or "guest"), safe="")
    vhost = quote(str(getattr(c, "RABBITMQ_VIRTUAL_HOST", None) or "/"), safe="")
    return f"amqp://{user}:{password}@{host}:{getattr(c, 'RABBITMQ_PORT', None) or 5672}/{vhost}"


def _kafka_servers(c: Any) -> Optional[str]:
    servers = getattr(c, "KAFKA_BOOTSTRAP_SERVERS", None)
    if not servers:
        return None
    return servers if isinstance(servers, str) else ",".join(str(s) for s in servers)


def _sasl(key: str) -> Callable[[Any], Optional[str]]:
    def get(c: Any) -> Optional[str]:
        conf = getattr(c, "KFFKA_SASL_CONFIG", None) or {}
        value = conf.get(key) if isinstance(conf, dict) else None
        return str(value) if value else None
    return get


def _attr(name: str) -> Callable[[Any], Optional[str]]:
    def get(c: Any) -> Optional[str]:
        value = getattr(c, name, None)
        if value is None or value == "" or _TEMPLATE_DEFAULTS.get(name) == value:
            return None
        return str(value)
    return get


# environment variable of this project <- how to read it from the user's BrokerConnConfig
BROKER_CONN_MAPPING: dict[str, tuple[str, Callable[[Any], Optional[str]]]] = {
    "FUNBOOST_REDIS_URL": ("REDIS_URL / REDIS_HOST...", lambda c: _redis_url(c, "REDIS_DB")),
    "FUNBOOST_STATE_REDIS_URL": ("REDIS_DB_FILTER_AND_RPC_RESULT",
                                 lambda c: _redis_url(c, "REDIS_DB_FILTER_AND_RPC_RESULT")
                                 if getattr(c, "REDIS_DB_FILTER_AND_RPC_RESULT", None) is not None else None),
    "FUNBOOST_RABBITMQ_URL": ("RABBITMQ_URL / RABBITMQ_HOST...", _rabbitmq_url),
    "FUNBOOST_KAFKA_BOOTSTRAP_SERVERS": ("KAFKA_BOOTSTRAP_SERVERS", _kafka_servers),
    "FUNBOOST_KAFKA_SECURITY_PROTOCOL": ("KFFKA_SASL_CONFIG['security_protocol']", _sasl("security_protocol")),
    "FUNBOOST_KAFKA_SASL_MECHANISM": ("KFFKA_SASL_CONFIG['sasl_mechanism']", _sasl("sasl_mechanism")),
    "FUNBOOST_KAFKA_SASL_USERNAME": ("KFFKA_SASL_CONFIG['sasl_plain_username']", _sasl("sasl_plain_username")),
    "FUNBOOST_KAFKA_SASL_PASSWORD": ("KFFKA_SASL_CONFIG['sasl_plain_password']", _sasl("sasl_plain_password")),
    "FUNBOOST_SQLALCHEMY_URL": ("SQLACHEMY_ENGINE_URL", _attr("SQLACHEMY_ENGINE_URL")),
    "FUNBOOST_MYSQL_CDC_HOST": ("MYSQL_HOST", _attr("MYSQL_HOST")),
    "FUNBOOST_MYSQL_CDC_PORT": ("MYSQL_PORT", _attr("MYSQL_PORT")),
    "FUNBOOST_MYSQL_CDC_USER": ("MYSQL_USER", _attr("MYSQL_USER")),
    "FUNBOOST_MYSQL_CDC_PASSWORD": ("MYSQL_PASSWORD", _attr("MYSQL_PASSWORD")),
    "FUNBOOST_SQLITE_DIR": ("SQLLITE_QUEUES_PATH", _attr("SQLLITE_QUEUES_PATH")),
    "FUNBOOST_MQTT_HOST": ("MQTT_HOST", _attr("MQTT_HOST")),
    "FUNBOOST_MQTT_PORT": ("MQTT_TCP_PORT", _attr("MQTT_TCP_PORT")),
    "FUNBOOST_NATS_URL": ("NATS_URL", _attr("NATS_URL")),
    "FUNBOOST_CELERY_BROKER_URL": ("CELERY_BROKER_URL", _attr("CELERY_BROKER_URL")),
    "FUNBOOST_CELERY_RESULT_BACKEND": ("CELERY_RESULT_BACKEND", _attr("CELERY_RESULT_BACKEND")),
    "FUNBOOST_DRAMATIQ_BROKER_URL": ("DRAMATIQ_URL", _attr("DRAMATIQ_URL")),
    "FUNBOOST_POSTGRES_DSN": ("POSTGRES_DSN", _attr("POSTGRES_DSN")),
}


class ConfigPickup:
    """What the pick-up found: the file, the variables it set, the ones the environment already had."""

    def __init__(self) -> None:
        self.path: Optional[str] = None
        self.applied: dict[str, str] = {}  # env var -> value taken from the file
        self.kept_from_env: list[str] = []  # set in the environment already: the environment wins
        self.error: Optional[str] = None


_lock = threading.Lock()
_done: Optional[ConfigPickup] = None


def _masked(value: str) -> str:
    """A value for the notice: passwords in URLs and DSNs hidden."""
    from funboost.redact import shown_url
    return shown_url(value)


def use_config_form_funboost_config_module() -> ConfigPickup:
    """Read the user's ``funboost_config.py`` once per process (see the module docstring); returns what
    was done. The original's function name is kept (with its spelling)."""
    global _done
    if _done is not None:
        return _done
    with _lock:
        if _done is not None:
            return _done
        result = ConfigPickup()
        try:
            if os.environ.get("FUNBOOST_NO_CONFIG_FILE", "") not in ("", "0"):
                return result
            spec = importlib.util.find_spec("funboost_config")
            if spec is None:
                return result
            result.path = spec.origin
            try:
                module = importlib.import_module("funboost_config")  # the user's own settings file
            except ImportError as exc:
                # a module the original's generated file imports and this project has not (nb_log, pytz...):
                # read the settings written as plain values instead of ignoring the whole file
                if exc.name in (None, "funboost_config") or not spec.origin:
                    raise
                module = _literal_settings(spec.origin)
                warnings.warn(f"funboost: funboost_config.py ({spec.origin}) imports {exc.name!r}, which is not "
                              f"installed; its settings written as plain values were read, any computed from that "
                              f"module were not", _compat_warning(), stacklevel=3)
            _apply(module, result)
        except Exception as exc:  # a broken config file must not break every import of a booster
            result.error = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"funboost: could not read funboost_config.py ({result.path}): {result.error}; "
                          f"ignoring it", _compat_warning(), stacklevel=3)
        finally:
            _done = result
        return result


def _literal_settings(path: str) -> Any:
    """The ``BrokerConnConfig`` / ``FunboostCommonConfig`` of a config file that cannot be imported, from its
    source: every upper-case class attribute whose value is a literal (strings, numbers, lists, dicts...)."""
    import ast
    import types
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    module = types.SimpleNamespace()
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.name not in ("BrokerConnConfig", "FunboostCommonConfig"):
            continue
        settings: dict[str, Any] = {}
        for stmt in node.body:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if (
                isinstance(stmt, ast.AnnAssign) and stmt.value is not None) else []
            for target in targets:
                try:
                    value = ast.literal_eval(stmt.value)  # type: ignore[union-attr,attr-defined]
                except ValueError:  # computed (an f-string, a call): not knowable without the import
                    continue
                if isinstance(target, ast.Name):
                    pairs = [(target.id, value)]
                elif isinstance(target, ast.Tuple) and isinstance(value, tuple) and len(value) == len(target.elts):
                    pairs = [(t.id, v) for t, v in zip(target.elts, value) if isinstance(t, ast.Name)]
                else:
                    continue
                settings.update((name, v) for name, v in pairs if name.isupper())
        setattr(module, node.name, type(node.name, (), settings))
    return module


def _compat_warning() -> type[Warning]:
    from funboost.params import FunboostCompatWarning
    return FunboostCompatWarning


def _apply(module: Any, result: ConfigPickup) -> None:
    user_conn = getattr(module, "BrokerConnConfig", None)
    user_common = getattr(module, "FunboostCommonConfig", None)
    for ours, theirs in ((BrokerConnConfig, user_conn), (FunboostCommonConfig, user_common)):
        if theirs is None:
            continue
        for name in dir(theirs):
            if name.isupper():
                setattr(ours, name, getattr(theirs, name))
    if user_conn is not None:
        for env, (_, read) in BROKER_CONN_MAPPING.items():
            value = read(user_conn)
            if value is None:
                continue
            if os.environ.get(env):
                result.kept_from_env.append(env)
                continue
            os.environ[env] = value
            result.applied[env] = value
    tz = getattr(user_common, "TIMEZONE", None) if user_common is not None else None
    if tz:  # schedules (cron / date jobs) and publish_time_format use it, as in the original
        if os.environ.get("FUNBOOST_TIMEZONE"):
            result.kept_from_env.append("FUNBOOST_TIMEZONE")
        else:
            os.environ["FUNBOOST_TIMEZONE"] = result.applied["FUNBOOST_TIMEZONE"] = str(tz)
    level = getattr(user_common, "FUNBOOST_PROMPT_LOG_LEVEL", None) if user_common is not None else None
    if isinstance(level, (int, str)) and level != "":
        logging.getLogger("funboost").setLevel(level)
    parts = [f"{k}={_masked(v)}" for k, v in result.applied.items()]
    msg = (f"funboost: read {result.path} (the original funboost's settings file): "
           f"{'set ' + ', '.join(parts) if parts else 'no connection setting to map'}")
    if result.kept_from_env:
        msg += f"; already set in the environment, kept: {', '.join(result.kept_from_env)}"
    if "FUNBOOST_STATE_REDIS_URL" in result.applied and (os.environ.get("FUNBOOST_STATE_BACKEND") or "").lower() \
            != "redis":
        # the original keeps RPC results, filters and heartbeats in that Redis db whatever the broker; here they
        # follow the state backend, which is sqlite on this machine unless told otherwise
        msg += ("; RPC results, task filters and heartbeats stay in this machine's sqlite state backend: set "
                "FUNBOOST_STATE_BACKEND=redis to keep them in REDIS_DB_FILTER_AND_RPC_RESULT's database as the "
                "original does")
    warnings.warn(msg + ". Environment variables are this project's way (docs/migrating.md)",
                  _compat_warning(), stacklevel=4)


def show_frame_config() -> None:
    """Print the settings read from ``funboost_config.py`` (passwords hidden)."""
    r = use_config_form_funboost_config_module()
    print(f"funboost_config.py: {r.path or 'not found on the import path'}")
    for k, v in r.applied.items():
        print(f"  {k} = {_masked(v)}")
    for k in r.kept_from_env:
        print(f"  {k} = {_masked(os.environ.get(k, ''))} (from the environment)")


def _reset_for_tests() -> None:
    global _done
    _done = None
