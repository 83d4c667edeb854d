"""funboost-web: the web manager of funboost (``funboost web`` / ``python -m funboost_web``).

:func:`funboost_web.app.create_app` builds the Starlette application; :func:`funboost_web.cli.main` is the
command line. See docs/web.md.
"""
from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
