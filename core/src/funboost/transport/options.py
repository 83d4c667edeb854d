"""What the server transports' ``broker_exclusive_config`` models share: :class:`TransportOptions` (and
:class:`MutualTlsTransportOptions`) with the common fields, defaults read from environment variables (so
connection settings never have to be written into a project), the list of consumer addresses a publisher
sends to, and the address a consumer's own publishers use.
"""
from __future__ import annotations

import os
from typing import Any, ClassVar, Optional, Sequence, get_args, get_origin

from pydantic import Field, field_validator, model_validator

from funboost.plugins.broker import BrokerOptions

__all__ = ["env_str", "env_int", "env_float", "env_bool", "env_list", "normalize_addresses", "local_target",
           "check_tls_options", "TransportOptions", "MutualTlsTransportOptions", "DEFAULT_HOST"]

DEFAULT_HOST = "127.0.0.1"


def env_str(name: str) -> Optional[str]:
    """The variable's value, or None when it is unset or empty."""
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def env_int(name: str, default: int) -> int:
    value = env_str(name)
    return int(value) if value is not None else default


def env_float(name: str, default: float) -> float:
    value = env_str(name)
    return float(value) if value is not None else default


def env_bool(name: str) -> bool:
    """True for 1 / true / yes / on (any case); False when unset."""
    return (env_str(name) or "").lower() in ("1", "true", "yes", "on")


def env_list(name: str) -> Optional[list[str]]:
    """A comma-separated variable as a list (None when unset)."""
    value = env_str(name)
    if value is None:
        return None
    return [a.strip() for a in value.split(",") if a.strip()]


def normalize_addresses(value: Optional[Sequence[str]]) -> Optional[list[str]]:
    """Strip blanks; every address must be ``host:port``; an empty list means "not set" (None)."""
    if value is None:
        return None
    out = [a.strip() for a in value if a and a.strip()]
    for a in out:
        if ":" not in a:
            raise ValueError(f"address {a!r} must be 'host:port'")
    return out or None


def local_target(host: str, port: int) -> str:
    """``host:port`` a publisher on this machine uses to reach a consumer bound to ``host`` (a wildcard
    bind is reached on 127.0.0.1; an IPv6 literal gets its brackets)."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def check_tls_options(cert_file: Optional[str], key_file: Optional[str], client_ca_file: Optional[str],
                      client_cert_file: Optional[str], client_key_file: Optional[str]) -> None:
    """The TLS paths of a transport's options must come in pairs (see :mod:`funboost.transport.tls`).

    :raises ValueError: what is missing."""
    if bool(cert_file) != bool(key_file):
        raise ValueError("TLS on the consumer needs both tls_cert_file and tls_key_file")
    if client_ca_file and not cert_file:
        raise ValueError("tls_client_ca_file (client certificates) needs tls_cert_file and tls_key_file")
    if bool(client_cert_file) != bool(client_key_file):
        raise ValueError("a client certificate needs both tls_client_cert_file and tls_client_key_file")


_UNSET = object()


def _env_value(annotation: Any, name: str) -> Any:
    """The variable ``name`` parsed for a field of type ``annotation`` (``_UNSET`` when it is unset or empty),
    as the ``env_*`` helpers above parse it."""
    if env_str(name) is None:
        return _UNSET
    if get_origin(annotation) is not list:  # Optional[X] -> X
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            annotation = args[0]
    if annotation is bool:
        return env_bool(name)
    if annotation is int:
        return env_int(name, 0)
    if annotation is float:
        return env_float(name, 0.0)
    if get_origin(annotation) is list:
        return env_list(name)
    return env_str(name)


class TransportOptions(BrokerOptions):
    """Base of a server transport's options model (grpc, tcp, http): where the consumer listens, where
    publishers send, the token, the consumer's buffer, the server's TLS certificate, failover timings.

    Every field, the subclass's own included, reads the environment variable ``<env_prefix><FIELD>`` (upper
    case) when it is not given, so that connection settings never have to be written into a project;
    ``env_names`` renames a field's variable, ``env_skip`` lists the fields that read none. Subclasses set
    the default ``port`` of their kind.
    """

    env_prefix: ClassVar[str] = ""
    env_names: ClassVar[dict[str, str]] = {}
    env_skip: ClassVar[frozenset[str]] = frozenset()

    # 127.0.0.1 by default; any other address refuses to start without a token (or client certificates)
    host: str = DEFAULT_HOST
    port: int = Field(0, ge=0, le=65535)
    # where publishers send: "host:port" of every consumer; default: this consumer's own host:port
    addresses: Optional[list[str]] = None
    # shared secret carried by every request, checked in constant time; required for a non-loopback bind
    token: Optional[str] = None
    # the consumer's in-process buffer; when full the server refuses (backpressure) and the client goes elsewhere
    buffer_size: int = Field(1000, ge=1)
    # consumer: serve TLS with this certificate and key (paths)
    tls_cert_file: Optional[str] = None
    tls_key_file: Optional[str] = None
    # publisher: name to verify in the consumer's certificate when it differs from the address's host
    tls_server_name: Optional[str] = None
    # how long publish() keeps trying (other consumers, backoff) before it gives up
    publish_timeout: float = Field(10.0, gt=0)
    # how often a consumer marked down is probed
    health_check_interval: float = Field(0.5, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _env_defaults(cls, data: Any) -> Any:
        # the variables fill only what the caller left out (an explicit None stays None)
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, field in cls.model_fields.items():
            if name in data or name in cls.env_skip:
                continue
            value = _env_value(field.annotation, cls.env_names.get(name) or f"{cls.env_prefix}{name.upper()}")
            if value is not _UNSET:
                data[name] = value
        return data

    @field_validator("addresses")
    @classmethod
    def _check_addresses(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        return normalize_addresses(value)

    def target_addresses(self) -> list[str]:
        """Where a publisher sends: ``addresses`` or this consumer's own ``host:port``."""
        return list(self.addresses) if self.addresses else [local_target(self.host, self.port)]


class MutualTlsTransportOptions(TransportOptions):
    """:class:`TransportOptions` with client certificates (tcp, http): the consumer may require them
    (``tls_client_ca_file``), a publisher may present one, and verifies the consumer against ``tls_ca_file``."""

    # consumer: with tls_client_ca_file, every publisher must present a certificate signed by that CA
    tls_client_ca_file: Optional[str] = None
    # publisher: connect with TLS; trust tls_ca_file (the CA or self-signed certificate), else the system's CAs
    tls: bool = False
    tls_ca_file: Optional[str] = None
    tls_client_cert_file: Optional[str] = None
    tls_client_key_file: Optional[str] = None

    @model_validator(mode="after")
    def _check_tls(self) -> "MutualTlsTransportOptions":
        check_tls_options(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file, self.tls_client_cert_file,
                          self.tls_client_key_file)
        return self

    @property
    def client_tls(self) -> bool:
        """Whether publishers connect with TLS."""
        return bool(self.tls or self.tls_ca_file or self.tls_client_cert_file)
