"""The ``funboost`` command (also ``python -m funboost``).

    funboost brokers [--json]                   installed broker kinds, distributions, capabilities
    funboost state-backends                     installed state backends
    funboost -m myproj.tasks queues             queues of the boosters defined in the imported modules
    funboost -m myproj.tasks consume Q [Q ...] [--processes N]
    funboost -m myproj.tasks push Q '{"x": 1}'
    funboost -m myproj.tasks clear|pause|resume|count Q
    funboost new-broker NAME [--dest DIR]       scaffold a broker plugin distribution from the template

``-m`` goes before the subcommand. Every error is one line on stderr (``funboost: error: ...``) and exit
status 2; no tracebacks.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import NoReturn, Optional, Sequence

USAGE_ERROR = 2  # the exit status of every error, as argparse uses for its own


def _cmd_brokers(args: argparse.Namespace) -> int:
    from funboost.plugins.manager import get_broker_registry
    infos = get_broker_registry().installed()
    if args.json:
        print(json.dumps([i.as_dict() for i in infos], indent=2))
        return 0
    for i in infos:
        print(f"{i.kind:<16} {i.distribution} {i.version}")
        print(f"    names: {', '.join(i.aliases)}")
        if i.error:
            print(f"    BROKEN: {i.error}")
            continue
        caps = i.broker_cls.capabilities.as_dict()
        on = [k for k, v in caps.items() if v is True]
        print(f"    capabilities: {', '.join(on) or '-'}; queue size {caps['queue_size']}; "
              f"ordering {caps['ordering']}")
        if caps.get("notes"):
            print(f"    notes: {caps['notes']}")
    return 0


def _cmd_state_backends(args: argparse.Namespace) -> int:
    from funboost.state.base import installed_state_backends
    for n in installed_state_backends():
        print(n)
    return 0


def _booster(q: str):
    from funboost.registry import BoostersManager
    return BoostersManager.get_booster(q)


def _cmd_queues(args: argparse.Namespace) -> int:
    from funboost.registry import BoostersManager
    for b in BoostersManager.all_boosters():
        print(f"{b.queue_name}\t{b.params.broker_kind}\t{b.func_name}")
    return 0


def _cmd_consume(args: argparse.Namespace) -> int:
    from funboost.booster import ctrl_c_recv
    from funboost.registry import BoostersManager
    queues = args.queues or BoostersManager.get_all_queues()
    if args.processes and args.processes > 1:
        BoostersManager.multi_process_consume_queues(**{q: args.processes for q in queues})
    else:
        BoostersManager.consume_queues(*queues)
    ctrl_c_recv()
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    try:
        kwargs = json.loads(args.message)
    except ValueError as exc:
        raise CliError(f"the message must be a JSON object of the function's arguments: {exc}") from None
    if not isinstance(kwargs, dict):
        raise CliError(f"the message must be a JSON object of the function's arguments, got "
                       f"{type(kwargs).__name__}")
    r = _booster(args.queue).publish(kwargs)
    print(r.task_id)
    return 0


def _cmd_simple(args: argparse.Namespace) -> int:
    b = _booster(args.queue)
    if args.command == "clear":
        print(b.clear())
    elif args.command == "pause":
        b.pause()
    elif args.command == "resume":
        b.resume()
    elif args.command == "count":
        print(b.get_message_count())
    return 0


class CliError(Exception):
    """A usage error found after parsing (bad JSON, unknown queue ...): one line, exit status 2."""


class _OneLineErrorParser(argparse.ArgumentParser):
    """argparse, with its errors as one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see {self.prog} --help)")


def _fail(message: str) -> NoReturn:
    one_line = " ".join(str(message).split())
    sys.stderr.write(f"funboost: error: {one_line}\n")
    raise SystemExit(USAGE_ERROR)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and len(exc.args) == 1:  # KeyError's str() adds quotes
        return str(exc.args[0])
    if isinstance(exc, CliError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _cmd_new_broker(args: argparse.Namespace) -> int:
    from funboost.scaffold import ScaffoldError, new_broker_plugin
    try:
        path = new_broker_plugin(args.name, args.dest)
    except ScaffoldError as exc:
        raise CliError(str(exc)) from None
    print(f"created {path}; next: pip install -e '{path}[test]' && pytest {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineErrorParser(prog="funboost", description="funboost command line")
    p.add_argument("-m", "--import-modules", default="", help="comma-separated modules that define boosters")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("brokers", help="list installed broker kinds")
    b.add_argument("--json", action="store_true")
    b.set_defaults(fn=_cmd_brokers)
    sub.add_parser("state-backends", help="list installed state backends").set_defaults(fn=_cmd_state_backends)
    sub.add_parser("queues", help="list the queues of the imported modules").set_defaults(fn=_cmd_queues)
    c = sub.add_parser("consume", help="consume queues (all imported ones by default)")
    c.add_argument("queues", nargs="*")
    c.add_argument("--processes", type=int, default=1)
    c.set_defaults(fn=_cmd_consume)
    pu = sub.add_parser("push", help="publish a JSON object of arguments")
    pu.add_argument("queue")
    pu.add_argument("message")
    pu.set_defaults(fn=_cmd_push)
    for name in ("clear", "pause", "resume", "count"):
        s = sub.add_parser(name)
        s.add_argument("queue")
        s.set_defaults(fn=_cmd_simple)
    nb = sub.add_parser("new-broker", help="scaffold a broker plugin distribution (funboost-NAME) from the template")
    nb.add_argument("name")
    nb.add_argument("--dest", default=None, help="target directory (default ./funboost-NAME)")
    nb.set_defaults(fn=_cmd_new_broker)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.import_modules:
            sys.path.insert(0, ".")
            for mod in filter(None, (m.strip() for m in args.import_modules.split(","))):
                try:
                    importlib.import_module(mod)
                except Exception as exc:
                    raise CliError(f"cannot import module {mod!r} (-m): {type(exc).__name__}: {exc}") from None
        return args.fn(args)
    except SystemExit:
        raise
    except Exception as exc:  # the command line shows errors as one line, never a traceback
        _fail(_describe(exc))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
