"""The original funboost's ``funboost.consumers`` module path (alias)."""
