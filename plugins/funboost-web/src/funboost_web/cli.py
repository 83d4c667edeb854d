"""``funboost web`` (core's CLI hands its arguments to :func:`main`) and ``python -m funboost_web``.

    funboost web [--host 127.0.0.1] [--port 27018] [--admin-password PW] [--state-backend NAME]
                 [--state-url URL] [--certfile F --keyfile F] [--broker-options JSON]

The first start creates the user ``admin``: with ``--admin-password`` / ``FUNBOOST_WEB_ADMIN_PASSWORD`` when
given, else a random password printed once. Errors are one line on stderr, exit status 2.
"""
from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import os
import socket
import ssl
import sys
import threading
from typing import Optional, Sequence

ENV_PASSWORD = "FUNBOOST_WEB_ADMIN_PASSWORD"
DEFAULT_PORT = 27018


class StartupError(Exception):
    """What stops the manager from starting, as the one line printed (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)  # --port only, never --po: an option is its full name
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> "None":  # type: ignore[override]
        print(f"funboost web: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _port(text: str) -> int:
    """A TCP port, 0..65535 (0: any free port); the resolver would silently wrap 99999 to 34463."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0..65535, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="funboost web", description="The funboost web manager.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this host only)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--admin-password", default=None,
                   help=f"password of the user admin (env {ENV_PASSWORD}); on the first start it creates admin, "
                        "later it resets admin's password. Without it, the first start prints a random one once")
    p.add_argument("--state-backend", default=None,
                   help="state backend to read (default: env FUNBOOST_STATE_BACKEND, else sqlite)")
    p.add_argument("--state-url", default=None, help="URL / path of the state backend")
    p.add_argument("--broker-options", default=None,
                   help='JSON {"<kind>": {options}} merged over the options recorded by consumers (for secrets '
                        "the catalog does not record); also env FUNBOOST_ADMIN_BROKER_OPTIONS")
    p.add_argument("--certfile", default=None, help="TLS certificate (PEM): serve HTTPS")
    p.add_argument("--keyfile", default=None, help="TLS private key (PEM)")
    p.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")
    return p


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed): a status, not an exception
        return int(exc.code or 0)
    try:
        return _serve(args)
    except KeyboardInterrupt:
        return 0
    except StartupError as exc:
        print(f"funboost web: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"funboost web: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


def check_tls_files(certfile: Optional[str], keyfile: Optional[str]) -> None:
    """Both files or neither; each one readable; together a certificate and its key. StartupError naming the
    file otherwise (ssl's own errors do not say which file)."""
    if bool(certfile) != bool(keyfile):
        raise StartupError("--certfile and --keyfile go together")
    if not certfile or not keyfile:
        return
    for flag, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        try:
            with open(path, "rb"):
                pass
        except FileNotFoundError:
            raise StartupError(f"{flag} {path}: no such file") from None
        except OSError as exc:
            raise StartupError(f"{flag} {path}: cannot be read: {exc.strerror or exc}") from None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, ValueError) as exc:
        raise StartupError(f"--certfile {certfile} / --keyfile {keyfile}: not a PEM certificate and its "
                           f"private key ({exc})") from None


def bind_listener(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else happens (uvicorn is handed this socket): a port in
    use or an address of no interface here is a StartupError, not uvicorn's error after start-up output."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {host}:{port}: unknown host ({exc.strerror})") from None
    family, socktype, proto, _, addr = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart binds at once
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        why = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise StartupError(f"cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def _serve(args: argparse.Namespace) -> int:
    # everything that can be checked is checked, and the port bound, before anything changes (the admin
    # password is created or reset below)
    check_tls_files(args.certfile, args.keyfile)
    try:
        overrides = json.loads(args.broker_options) if args.broker_options else None
    except ValueError as exc:
        raise StartupError(f"--broker-options is not valid JSON: {exc}") from None
    if overrides is not None and not isinstance(overrides, dict):
        raise StartupError('--broker-options must be a JSON object {"<kind>": {options}}')
    sock = bind_listener(args.host, args.port)
    try:
        return _serve_on(sock, args, overrides)
    finally:
        sock.close()


def _serve_on(sock: socket.socket, args: argparse.Namespace, overrides: Optional[dict]) -> int:
    import uvicorn

    from funboost.admin import QueueAdmin
    from funboost.state.base import get_state_backend
    from funboost_web.app import WebConfig, create_app
    from funboost_web.auth import UserStore

    state = get_state_backend(args.state_backend, args.state_url)
    try:
        state.doc_list("web_users")
    except NotImplementedError:
        raise StartupError(f"the state backend {state.name!r} stores no documents; the manager needs one that "
                           f"does (sqlite, redis, sqlalchemy)") from None
    admin = QueueAdmin(state, overrides)
    users = UserStore(state)
    created = users.ensure_admin(args.admin_password or os.environ.get(ENV_PASSWORD) or None)
    if created:
        print(f"funboost web: created the user 'admin' with the password: {created}\n"
              f"  (shown once; it is stored hashed. Set another with --admin-password or {ENV_PASSWORD}.)",
              flush=True)
    tls = bool(args.certfile)
    if not _is_loopback(args.host) and not tls:
        print(f"funboost web: WARNING: listening on {args.host} without TLS: passwords and session cookies "
              f"cross the network in clear. Use --certfile/--keyfile or a TLS-terminating proxy.",
              file=sys.stderr, flush=True)
    app = create_app(WebConfig(admin, https=tls))

    def warm() -> None:  # build every queue's broker and read the final metric buckets once, off the first request
        try:
            admin.summaries()
            admin.series(None, "60m")
        except Exception:
            pass

    threading.Thread(target=warm, name="funboost-web-warm", daemon=True).start()
    scheme = "https" if tls else "http"
    port = sock.getsockname()[1]  # the real one for --port 0
    print(f"funboost web: serving {scheme}://{args.host}:{port}/ (state backend {state.name})", flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, ssl_certfile=args.certfile, ssl_keyfile=args.keyfile,
                            access_log=False)
    uvicorn.Server(config).run(sockets=[sock])  # the socket bound above
    return 0
