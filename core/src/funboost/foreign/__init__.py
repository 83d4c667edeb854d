"""Frameworks as brokers: what a plugin needs to run funboost boosters on another task framework's worker
(Celery, dramatiq, huey, rq, nameko). Imports no framework library.

* :func:`envelope_from_foreign`: the funboost envelope from a framework message's args / kwargs;
* :func:`run_foreign_delivery` and :func:`outcome_of`: run it through funboost's controls and runner
  in the framework's thread, and the :class:`Verb` the framework settles its message with;
* :class:`ForeignWorkerHost`, :func:`join_worker_host`: the per-process worker host (which boosters
  share the framework's worker, settle time, start / stop of the worker thread, pause / run-time
  window / qps mirrored into the worker);
* :func:`parse_eta`, :func:`eta_datetime`, :func:`seconds_until`: due times as frameworks write them;
* :func:`poll_until`, :class:`HeldMessages`: the pull path (``Broker.fetch``) of a framework's storage,
  polled until a deadline while messages fetched before their due time are held.

See "Frameworks as brokers" in docs/writing-a-broker-plugin.md.
"""
from funboost.foreign.envelope import envelope_from_foreign
from funboost.foreign.eta import EtaLike, eta_datetime, parse_eta, seconds_until
from funboost.foreign.host import (STOPPED_REASON, ForeignWorkerHost, join_worker_host, run_foreign_delivery,
                                   worker_host)
from funboost.foreign.outcome import Outcome, Verb, outcome_of, rejected
from funboost.foreign.poll import HeldMessages, poll_until

__all__ = ["envelope_from_foreign", "EtaLike", "eta_datetime", "parse_eta", "seconds_until", "STOPPED_REASON",
           "ForeignWorkerHost", "join_worker_host", "run_foreign_delivery", "worker_host", "Outcome", "Verb",
           "outcome_of", "rejected", "HeldMessages", "poll_until"]
