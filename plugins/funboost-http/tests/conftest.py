import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from support import free_port  # noqa: E402


@pytest.fixture
def queue_name() -> str:
    return f"test_http_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def port() -> int:
    return free_port()
