"""Alias of the original's module path: the helper its documentation uses for instance-method consumers."""
from __future__ import annotations

import copy
from typing import Any

from funboost.constant import FunctionKind  # noqa: F401


class ClsHelper:
    @staticmethod
    def get_obj_init_params_for_funboost(obj_init_params: dict) -> dict[str, Any]:
        """The ``__init__`` arguments of an object whose method is a booster, from ``copy.copy(locals())``
        at the top of its ``__init__`` (``self`` and ``__class__`` left out): kept as
        ``self.obj_init_params`` so that the consumer can build the same object."""
        params = {k: v for k, v in obj_init_params.items() if k not in ("self", "__class__")}
        return copy.deepcopy(params)
