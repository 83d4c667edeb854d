"""The original funboost's ``funboost.utils`` module path (alias)."""
