"""funboost-celery: ``broker_kind="CELERY"`` runs funboost functions on a real Celery app and worker."""
from funboost_celery.app import build_conf, get_app
from funboost_celery.broker import CeleryBroker, celery_app, celery_async_result
from funboost_celery.options import CeleryOptions
from funboost_celery.worker import FunboostTaskFailed

__all__ = ["CeleryBroker", "CeleryOptions", "FunboostTaskFailed", "get_app", "build_conf", "celery_app",
           "celery_async_result"]
__version__ = "0.1.0"
