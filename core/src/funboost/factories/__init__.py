"""The original funboost's ``funboost.factories`` module path (alias)."""
