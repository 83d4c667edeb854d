"""Compatibility re-export: the status-record format lives in :mod:`funboost.records` (a leaf module
that both the engine and the state backends import)."""
from __future__ import annotations

from funboost.records import (  # noqa: F401
    COMPACT_FIELDS, FunctionResultStatus, StatusBatch, _DEFAULTS, _FIELDS, _PID, complete_record, expand_record,
    record_success, record_task_id, record_time_start,
)

__all__ = ["COMPACT_FIELDS", "FunctionResultStatus", "StatusBatch", "complete_record", "expand_record",
           "record_success", "record_task_id", "record_time_start"]
