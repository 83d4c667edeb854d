"""funboost-rq: ``broker_kind="RQ"`` runs funboost functions on rq's queues and workers (Redis)."""
from funboost_rq.broker import RqBroker, rq_queue
from funboost_rq.job import FunboostJobFailed, NotAFunboostWorker, run
from funboost_rq.options import RqOptions

__all__ = ["RqBroker", "RqOptions", "FunboostJobFailed", "NotAFunboostWorker", "rq_queue", "run"]
__version__ = "0.1.0"
