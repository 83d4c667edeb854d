import os
import socket
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def queue_name() -> str:
    return f"test_tcp_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def port() -> int:
    return free_port()
