"""Static, class and instance methods as tasks.

The receiver (class or instance) cannot travel as JSON, so the publisher replaces it with a small
description: ``{"cls_module", "cls_name", "obj_init_params"}``. The consumer re-imports the class and,
for an instance method, rebuilds the instance from ``obj_init_params`` (an attribute the object must
carry, e.g. set in ``__init__``: ``self.obj_init_params = {"a": a}``).
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any

from funboost.exceptions import PublishArgumentsError

COMMON, STATIC, CLASS, INSTANCE = "COMMON_FUNCTION", "STATIC_METHOD", "CLASS_METHOD", "INSTANCE_METHOD"


def detect_function_kind(func: Any, params: Any) -> str:
    if params.consuming_function_kind:
        return params.consuming_function_kind
    if isinstance(func, staticmethod):
        return STATIC
    if isinstance(func, classmethod):
        return CLASS
    raw = func
    qual = getattr(raw, "__qualname__", "")
    if "." in qual and "<locals>" not in qual.rsplit(".", 1)[0].split(".")[-1:]:
        names = list(inspect.signature(raw).parameters)
        if names and names[0] == "self":
            return INSTANCE
        if names and names[0] == "cls":
            return CLASS
    return COMMON


def _first_param(booster: Any) -> str:
    return booster._all[0]


def serialize_receiver(booster: Any, env: dict) -> None:
    name = _first_param(booster)
    receiver = env.get(name)
    if receiver is None:
        raise PublishArgumentsError(f"{booster.func_name}: the first argument ({name}) must be the "
                                    f"{'class' if booster.function_kind == CLASS else 'instance'}")
    if isinstance(receiver, dict) and "cls_name" in receiver:
        return  # already serialized (re-published message)
    cls = receiver if booster.function_kind == CLASS else type(receiver)
    desc: dict[str, Any] = {"cls_module": cls.__module__, "cls_name": cls.__qualname__}
    if booster.function_kind == INSTANCE:
        init = getattr(receiver, "obj_init_params", None)
        if not isinstance(init, dict):
            raise PublishArgumentsError(
                f"{booster.func_name}: an instance method task needs the instance to carry "
                f"'obj_init_params' (a dict of its __init__ arguments) so the consumer can rebuild it")
        desc["obj_init_params"] = init
    env[name] = desc


def _import_class(module: str, qualname: str) -> type:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def rebuild_receiver(booster: Any, kwargs: dict) -> dict:
    name = _first_param(booster)
    desc = kwargs.get(name)
    if not isinstance(desc, dict) or "cls_name" not in desc:
        raise TypeError(f"argument {name!r} must describe the class/instance ({{cls_module, cls_name}})")
    try:
        cls = _import_class(desc["cls_module"], desc["cls_name"])
    except (ImportError, AttributeError) as exc:
        raise TypeError(f"cannot import {desc.get('cls_module')}.{desc.get('cls_name')}: {exc}") from None
    out = dict(kwargs)
    if booster.function_kind == INSTANCE:
        try:
            out[name] = cls(**desc.get("obj_init_params", {}))
        except Exception as exc:
            raise TypeError(f"cannot rebuild {cls.__qualname__}(**{desc.get('obj_init_params')}): {exc}") from None
    else:
        out[name] = cls
    return out
