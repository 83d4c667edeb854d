"""Alias of the original's module path."""
from funboost.booster import ctrl_c_recv  # noqa: F401
from funboost.compat import enable_ctrl_c_quit_on_windows  # noqa: F401
