"""The state-backend contract suite on the backends shipped in core."""
from __future__ import annotations

from funboost.testing.state_contract import StateBackendContract


class TestMemoryStateContract(StateBackendContract):
    backend_name = "memory"


class TestSqliteStateContract(StateBackendContract):
    backend_name = "sqlite"
