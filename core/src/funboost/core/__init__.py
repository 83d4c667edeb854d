"""The original funboost's ``funboost.core`` module paths, kept as aliases (docs/migrating.md)."""
