import os
import tempfile

import pytest

# each test session gets its own data directory: sqlite state, logs
_tmp = tempfile.mkdtemp(prefix="funboost-core-tests-")
os.environ.setdefault("FUNBOOST_DATA_DIR", _tmp)
os.environ.setdefault("FUNBOOST_LOG_TO_CONSOLE", "0")


@pytest.fixture
def qname(request):
    import uuid
    return f"{request.node.name[:40]}_{uuid.uuid4().hex[:8]}"
