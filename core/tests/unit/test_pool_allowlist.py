"""FunboostPool runs only the project's own functions: a message cannot reach os.system through a project
module that imports os (``tasks:os.system``) or that did ``from os import system`` (``tasks:system``)."""
import sys
import textwrap

import pytest

from funboost import BoosterParams
from funboost.pool import FunboostPool


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "auditsec_pool_tasks.py").write_text(textwrap.dedent("""
        import os
        from os import system
        def add(a, b):
            return a + b
        class K:
            @staticmethod
            def twice(x):
                return 2 * x
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("auditsec_pool_tasks", None)


def _run(path, *args, allowed=None):
    pool = FunboostPool(BoosterParams(queue_name="auditsec_pool_allow", broker_kind="local_python_queue"),
                        is_auto_start_consuming_message=False, allowed_modules=allowed)
    return pool.booster.func(path, list(args), {})


def test_project_functions_run(project):
    assert _run("auditsec_pool_tasks:add", 1, 2) == 3
    assert _run("auditsec_pool_tasks:K.twice", 4) == 8
    assert _run("auditsec_pool_tasks:add", 1, 2, allowed=["auditsec_pool_tasks"]) == 3


@pytest.mark.parametrize("path", ["os:system", "auditsec_pool_tasks:os.system", "auditsec_pool_tasks:system",
                                  "auditsec_pool_tasks:add.__globals__", "auditsec_pool_tasks:__builtins__"])
def test_library_functions_refused(project, path, tmp_path):
    with pytest.raises(PermissionError):
        _run(path, f"touch {tmp_path}/pwned")
    assert not (tmp_path / "pwned").exists()


def test_allowed_modules_checked_before_import(project):
    with pytest.raises(PermissionError):
        _run("antigravity:x", allowed=["auditsec_pool_tasks"])
    assert "antigravity" not in sys.modules
