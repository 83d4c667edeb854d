"""Alias of the original's module path."""
from funboost.compat import AbstractConsumer, wait_for_possible_has_finish_all_tasks_by_conusmer_list  # noqa: F401
