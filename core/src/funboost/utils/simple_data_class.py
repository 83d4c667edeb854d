"""The original funboost's ``funboost.utils.simple_data_class`` module path: ``DataClassBase``, the base of
the ``BrokerConnConfig`` / ``FunboostCommonConfig`` classes in the ``funboost_config.py`` files it generated
(``from funboost.utils.simple_data_class import DataClassBase`` is their first line), so such a file
imports here unchanged. A class of settings as upper-case class attributes, with the helpers those files
and their users call."""
from __future__ import annotations

import json
from typing import Any

__all__ = ["DataClassBase"]


class DataClassBase:
    """Settings as class attributes (``REDIS_HOST = "..."``); the helpers read and update them."""

    @classmethod
    def get_dict(cls) -> dict[str, Any]:
        """The public class attributes (settings) of the class and its bases, as a dict."""
        out: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if not name.startswith("_") and not callable(value) and not isinstance(value, (classmethod, staticmethod)):
                    out[name] = value
        return out

    @classmethod
    def get_json(cls, indent: int = 4) -> str:
        return json.dumps(cls.get_dict(), ensure_ascii=False, indent=indent, default=str)

    @classmethod
    def update_cls_attribute(cls, **kwargs: Any) -> type:
        """Set settings on the class (the original's way of overriding them at run time)."""
        for name, value in kwargs.items():
            setattr(cls, name, value)
        return cls

    def __str__(self) -> str:
        return f"<{type(self).__name__} {self.get_json(indent=0)}>"
