"""The original funboost's ``funboost.publishers`` module path (alias)."""
