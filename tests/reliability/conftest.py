from __future__ import annotations

import os
import uuid

import pytest

os.environ.setdefault("FUNBOOST_LOG_TO_CONSOLE", "0")


@pytest.fixture
def qname() -> str:
    """A queue name no other test (nor a helper running tests on the same servers) uses."""
    return f"rel_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def sqlite_dir(tmp_path) -> str:
    d = tmp_path / "sqlite"
    d.mkdir()
    return str(d)
