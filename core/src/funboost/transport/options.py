"""Option helpers shared by the server transports' ``broker_exclusive_config`` models: defaults read from
environment variables (so connection settings never have to be written into a project), the list of
consumer addresses a publisher sends to, and the address a consumer's own publishers use.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

__all__ = ["env_str", "env_int", "env_float", "env_bool", "env_list", "normalize_addresses", "local_target",
           "check_tls_options"]


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
