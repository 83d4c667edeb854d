"""The original funboost's ``funboost.core.cli`` module paths, kept as aliases (docs/migrating.md)."""
