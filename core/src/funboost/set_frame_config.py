"""The original's ``funboost.set_frame_config`` module path: the ``funboost_config.py`` pick-up lives in
:mod:`funboost.funboost_config_deafult`."""
from funboost.funboost_config_deafult import show_frame_config, use_config_form_funboost_config_module

__all__ = ["show_frame_config", "use_config_form_funboost_config_module"]
