"""Contract suite for state backends (``funboost.state`` entry points), shipped with core.

A backend's test module subclasses :class:`StateBackendContract` and names the backend::

    from funboost.testing.state_contract import StateBackendContract

    class TestMyStateContract(StateBackendContract):
        backend_name = "mystate"
        backend_url = None          # or "mystate://127.0.0.1/..."; None = the backend's own default

Every test uses unique queue / task / lock names, so a shared server is fine. When the backend's
``check_available(url)`` returns a reason, the tests skip with it (fail under
``FUNBOOST_REQUIRE_SERVICES=1``). Backends with ``shared_across_processes = True`` are also checked from
child processes (results and locks seen across processes).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from typing import ClassVar, Iterator, Optional

import pytest

from funboost.engine.status import FunctionResultStatus, StatusBatch
from funboost.message import uuid7
from funboost.state.base import StateBackend, dumps_state_bytes, loads_state, resolve_state_backend_class
from funboost.testing.contract.base import require_service, wait_until

_SHORT = 1.0  # seconds: the ttl used by expiry tests (long enough for two calls on a loaded machine)


def _uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


class StateBackendContract:
    """Subclass and set ``backend_name`` (and optionally ``backend_url``)."""

    backend_name: ClassVar[str] = ""
    backend_url: ClassVar[Optional[str]] = None

    # ------------------------------------------------------------------ fixtures
    @pytest.fixture
    def backend_cls(self) -> type[StateBackend]:
        if not self.backend_name:
            pytest.skip("set backend_name on the StateBackendContract subclass")
        cls = resolve_state_backend_class(self.backend_name)
        reason = cls.check_available(self.backend_url)
        if reason:
            require_service(reason)
        return cls

    @pytest.fixture
    def backend(self, backend_cls: type[StateBackend]) -> Iterator[StateBackend]:
        b = backend_cls(self.backend_url)
        try:
            yield b
        finally:
            b.close()

    @pytest.fixture
    def queue(self) -> str:
        return _uid("q")

    def _child(self, code: str, timeout: float = 60) -> str:
        """Run ``code`` in a fresh interpreter with ``sb`` bound to a new backend instance; return stdout."""
        prelude = (f"from funboost.state.base import resolve_state_backend_class\n"
                   f"sb = resolve_state_backend_class({self.backend_name!r})({self.backend_url!r})\n")
        out = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True,
                             timeout=timeout, env=dict(os.environ))
        assert out.returncode == 0, out.stderr
        return out.stdout

    # ------------------------------------------------------------------ registration
    def test_registration(self, backend_cls: type[StateBackend]) -> None:
        assert issubclass(backend_cls, StateBackend)
        assert backend_cls.name.lower() == self.backend_name.lower()

    # ------------------------------------------------------------------ RPC results
    def test_result_round_trip(self, backend: StateBackend) -> None:
        tid = _uid("t")
        assert backend.get_result(tid) is None
        data = {"task_id": tid, "success": True, "result": {"a": [1, 2.5, None, "ü"]}, "run_times": 1}
        backend.set_result(tid, data, 60)
        assert backend.get_result(tid) == data
        backend.set_result(tid, {**data, "result": 7}, 60)  # overwrite
        assert (backend.get_result(tid) or {}).get("result") == 7

    def test_result_expires(self, backend: StateBackend) -> None:
        tid = _uid("t")
        backend.set_result(tid, {"result": 1}, _SHORT)
        assert backend.get_result(tid) == {"result": 1}
        wait_until(lambda: backend.get_result(tid) is None, 15, message="result expiry")

    def test_wait_result_timeout(self, backend: StateBackend) -> None:
        t0 = time.monotonic()
        assert backend.wait_result(_uid("t"), 0.3) is None
        assert 0.25 <= time.monotonic() - t0 < 3

    def test_wait_result_wakes_on_set(self, backend: StateBackend) -> None:
        tid = _uid("t")
        threading.Timer(0.2, lambda: backend.set_result(tid, {"result": 42}, 60)).start()
        t0 = time.monotonic()
        assert backend.wait_result(tid, 10) == {"result": 42}
        assert time.monotonic() - t0 < 5

    # ------------------------------------------------------------------ filters
    def test_filters(self, backend: StateBackend, queue: str) -> None:
        other = queue + "_other"
        assert not backend.filter_contains(queue, "k1")
        backend.filter_add(queue, "k1", None)
        backend.filter_add(queue, "k2", _SHORT)
        assert backend.filter_contains(queue, "k1") and backend.filter_contains(queue, "k2")
        assert not backend.filter_contains(other, "k1")
        wait_until(lambda: not backend.filter_contains(queue, "k2"), 15, message="filter key expiry")
        assert backend.filter_contains(queue, "k1")  # no ttl: kept
        backend.filter_clear(queue)
        assert not backend.filter_contains(queue, "k1")

    # ------------------------------------------------------------------ flags
    def test_flags(self, backend: StateBackend, queue: str) -> None:
        assert backend.get_flags(queue) == {}
        backend.set_flag(queue, "pause", True)
        backend.set_flag(queue, "qps", 2.5)
        backend.set_flag(queue, "concurrent_num", 7)
        backend.set_flag(queue, "note", None)
        assert backend.get_flags(queue) == {"pause": True, "qps": 2.5, "concurrent_num": 7, "note": None}
        backend.set_flag(queue, "pause", False)
        assert backend.get_flags(queue)["pause"] is False
        assert backend.get_flags(queue + "_other") == {}

    # ------------------------------------------------------------------ heartbeats
    def test_heartbeats(self, backend: StateBackend, queue: str) -> None:
        cid = _uid("c")
        backend.heartbeat(cid, queue, {"host": "h1", "pid": 123}, 30)
        backend.heartbeat(cid + "_short", queue, {"host": "h2"}, _SHORT)
        backend.heartbeat(cid + "_elsewhere", queue + "_other", {"host": "h3"}, 30)
        live = wait_until(lambda: (lambda l: l if len(l) == 1 else None)(backend.live_consumers(queue)), 15,
                          message="the short heartbeat to expire")
        rec = live[0]
        assert rec["consumer_id"] == cid and rec["queue"] == queue and rec["host"] == "h1" and rec["pid"] == 123
        assert abs(rec["last_seen"] - time.time()) < 30
        ids = {c["consumer_id"] for c in backend.live_consumers()}
        assert {cid, cid + "_elsewhere"} <= ids
        backend.heartbeat(cid, queue, {"host": "h1", "pid": 123, "rate": 9.5}, 30)  # refresh replaces info
        assert backend.live_consumers(queue)[0]["rate"] == 9.5
        backend.remove_consumer(cid)
        backend.remove_consumer(cid + "_elsewhere")
        assert backend.live_consumers(queue) == []

    # ------------------------------------------------------------------ remote kill
    def test_kill_requests(self, backend: StateBackend, queue: str) -> None:
        assert backend.kill_requests(queue) == set()
        backend.request_kill(queue, "t1")
        backend.request_kill(queue, "t2", ttl=_SHORT)
        assert backend.kill_requests(queue) == {"t1", "t2"}
        assert backend.kill_requests(queue + "_other") == set()
        wait_until(lambda: backend.kill_requests(queue) == {"t1"}, 15, message="kill request expiry")

    # ------------------------------------------------------------------ status records
    @staticmethod
    def _records(n: int, t0: float) -> list[dict]:
        return [{"task_id": f"t{i}", "queue_name": "q", "params": {"x": i}, "success": i % 2 == 0,
                 "result": i * 10 if i % 2 == 0 else None, "exception_type": None if i % 2 == 0 else "ValueError",
                 "exception_msg": None if i % 2 == 0 else f"bad {i}", "run_times": 1, "run_status": "finish",
                 "time_start": t0 + i, "time_end": t0 + i + 0.5, "time_cost": 0.5, "host": "h", "pid": 1,
                 "thread": "th"} for i in range(n)]

    def test_statuses_query(self, backend: StateBackend, queue: str) -> None:
        t0 = time.time()
        recs = self._records(10, t0)
        backend.save_statuses(queue, recs, 60)
        backend.save_statuses(queue, [], 60)  # empty batch: no-op
        newest = backend.query_statuses(queue, limit=3)
        assert [r["task_id"] for r in newest] == ["t9", "t8", "t7"]
        # every field comes back as saved; fields a record leaves out come back at their defaults
        assert {k: newest[0][k] for k in recs[9]} == recs[9]
        assert newest[0]["exception"] is None and newest[0]["timed_out"] is False
        assert {r["task_id"] for r in backend.query_statuses(queue, success=False)} == {"t1", "t3", "t5", "t7", "t9"}
        assert {r["task_id"] for r in backend.query_statuses(queue, success=True)} == {"t0", "t2", "t4", "t6", "t8"}
        assert backend.query_statuses(queue, task_id="t4")[0]["result"] == 40
        assert backend.query_statuses(queue, task_id="nope") == []
        assert len(backend.query_statuses(queue, since=t0 + 5)) == 5
        assert [r["task_id"] for r in backend.query_statuses(queue, since=t0 + 2, until=t0 + 4)] == ["t4", "t3", "t2"]
        assert len(backend.query_statuses(queue, limit=1000)) == 10
        assert backend.query_statuses(queue + "_other") == []

    def test_statuses_saved_as_batch(self, backend: StateBackend, queue: str) -> None:
        # the engine's path: each record taken (compact) when final, written later in a batch
        statuses = []
        for i in range(3):
            st = FunctionResultStatus(queue, f"t{i}", {"x": "héllo ✓\n" if i == 0 else i}, time.time() - 1)
            st.run_times = 1 + i
            if i == 1:
                st.set_error(ValueError("bad ✗"))
                st.timed_out = True
                st.user_context["note"] = "kept"
            else:
                st.result, st.success = {"r": i}, True
            st.finish()
            statuses.append(st)
        backend.save_status_batch(queue, StatusBatch([st.compact() for st in statuses]), 60)
        for st in statuses:
            got = backend.query_statuses(queue, task_id=st.task_id)
            assert got == [st.to_dict()]
        assert [r["task_id"] for r in backend.query_statuses(queue, success=True)] == ["t2", "t0"]
        assert [r["task_id"] for r in backend.query_statuses(queue, success=False)] == ["t1"]
        # an empty batch is a no-op; a record saved again (a later run) replaces the earlier one
        backend.save_status_batch(queue, StatusBatch([]), 60)
        again = FunctionResultStatus(queue, "t1", {"x": 1})
        again.run_times, again.success = 5, True
        again.finish()
        # records may also come as lists (compact records parsed back from JSON)
        backend.save_status_batch(queue, StatusBatch(loads_state(dumps_state_bytes([again.compact()]))), 60)
        assert backend.query_statuses(queue, task_id="t1") == [again.to_dict()]
        assert len(backend.query_statuses(queue)) == 3

    def test_statuses_many_batches(self, backend: StateBackend, queue: str) -> None:
        # more batches than one page of any paged read; engine-made (uuid7) task ids
        t0 = time.time() - 1000
        ids = []
        for b in range(250):
            batch = []
            for j in range(2):
                st = FunctionResultStatus(queue, uuid7(), {"b": b, "j": j})
                st.time_start = t0 + b * 2 + j
                st.success = j == 0
                st.finish()
                batch.append(st.compact())
                ids.append(st.task_id)
            backend.save_status_batch(queue, StatusBatch(batch), 60)
        everything = backend.query_statuses(queue, limit=1000)
        assert [r["task_id"] for r in everything] == ids[::-1]
        assert backend.query_statuses(queue, task_id=ids[0])[0]["params"] == {"b": 0, "j": 0}
        assert backend.query_statuses(queue, task_id=ids[-1])[0]["params"] == {"b": 249, "j": 1}
        assert len(backend.query_statuses(queue, success=True, limit=1000)) == 250
        window = backend.query_statuses(queue, since=t0 + 100, until=t0 + 109.5)
        assert [r["task_id"] for r in window] == ids[100:110][::-1]
        assert [r["task_id"] for r in backend.query_statuses(queue, limit=3)] == ids[-1:-4:-1]

    def test_statuses_upsert_by_task_id(self, backend: StateBackend, queue: str) -> None:
        rec = self._records(1, time.time())[0]
        backend.save_statuses(queue, [rec], 60)
        backend.save_statuses(queue, [{**rec, "success": False, "run_times": 2}], 60)
        rows = backend.query_statuses(queue)
        assert len(rows) == 1 and rows[0]["run_times"] == 2 and rows[0]["success"] is False
        # filters apply to a task's latest record only
        assert backend.query_statuses(queue, success=True) == []
        assert backend.query_statuses(queue, task_id=rec["task_id"])[0]["run_times"] == 2
        older = {**rec, "task_id": "older", "time_start": rec["time_start"] - 10}
        backend.save_statuses(queue, [older, {**rec, "success": True, "run_times": 3}], 60)
        backend.save_statuses(queue, [{**rec, "success": False, "run_times": 4, "time_start": rec["time_start"] + 1}],
                              60)
        assert [r["task_id"] for r in backend.query_statuses(queue, success=True, limit=1)] == ["older"]
        assert [r["run_times"] for r in backend.query_statuses(queue, success=False)] == [4]

    def test_statuses_retention(self, backend: StateBackend, queue: str) -> None:
        recs = self._records(3, time.time())
        backend.save_statuses(queue, recs[:2], _SHORT)
        backend.save_statuses(queue, recs[2:], 60)
        wait_until(lambda: [r["task_id"] for r in backend.query_statuses(queue)] == ["t2"], 5,
                   message="expired status records to disappear")

    # ------------------------------------------------------------------ locks
    # ------------------------------------------------------------------ manager support (funboost.admin)
    def _supports(self, backend: StateBackend, what: str) -> None:
        try:
            if what == "docs":
                backend.doc_list("probe")
            else:
                backend.metrics_get("s", int(time.time()))
        except NotImplementedError:
            pytest.skip(f"state backend {self.backend_name!r} does not store {what} (the web manager needs them)")

    def test_search_statuses_paging_and_filters(self, backend: StateBackend, queue: str) -> None:
        statuses = []
        t0 = time.time() - 100
        for i in range(30):
            st = FunctionResultStatus(queue, uuid7(), {"n": i, "who": "alice" if i % 3 == 0 else "bob"})
            st.time_start = t0 + i
            if i % 5 == 0:
                st.set_error(KeyError(f"missing_key_{i}"))
            else:
                st.success = True
            st.finish()
            statuses.append(st)
        for k in range(0, 30, 7):  # several batches
            backend.save_status_batch(queue, StatusBatch([st.compact() for st in statuses[k:k + 7]]), 60)
        ids = [st.task_id for st in statuses]
        page1 = backend.search_statuses(queue, limit=10)
        assert [r["task_id"] for r in page1] == ids[::-1][:10]
        cursor = (page1[-1]["time_start"], page1[-1]["task_id"])
        page2 = backend.search_statuses(queue, limit=10, before=cursor)
        assert [r["task_id"] for r in page2] == ids[::-1][10:20]
        failed = backend.search_statuses(queue, success=False, limit=100)
        assert [r["task_id"] for r in failed] == [ids[i] for i in (25, 20, 15, 10, 5, 0)]
        hit = backend.search_statuses(queue, text="missing_key_15", limit=100)
        assert [r["task_id"] for r in hit] == [ids[15]] and "KeyError" in hit[0]["exception"]
        assert len(backend.search_statuses(queue, text="alice", limit=100)) == 10
        assert [r["task_id"] for r in backend.search_statuses(queue, task_id=ids[7])] == [ids[7]]
        assert backend.search_statuses(queue, text="no such text") == []

    def test_documents(self, backend: StateBackend, queue: str) -> None:
        self._supports(backend, "docs")
        coll = _uid("coll")
        assert backend.doc_get(coll, "a") is None and backend.doc_list(coll) == {}
        backend.doc_put(coll, "b", {"x": 1, "s": "é"})
        backend.doc_put(coll, "a", {"y": [1, 2]})
        backend.doc_put(coll, "gone", {"z": 1}, ttl=_SHORT)
        assert backend.doc_get(coll, "b") == {"x": 1, "s": "é"}
        assert list(backend.doc_list(coll))[:2] == ["a", "b"]
        backend.doc_put(coll, "b", {"x": 2})
        assert backend.doc_get(coll, "b") == {"x": 2}
        wait_until(lambda: backend.doc_get(coll, "gone") is None, timeout=5)
        assert set(backend.doc_list(coll)) == {"a", "b"}
        assert backend.doc_delete(coll, "a") is True and backend.doc_delete(coll, "a") is False
        assert set(backend.doc_list(coll)) == {"b"}

    def test_metrics_rows(self, backend: StateBackend, queue: str) -> None:
        self._supports(backend, "metrics")
        from funboost.timeseries import MetricRow, bucket_of
        now = time.time()
        s0 = bucket_of(now, "s")
        other = queue + "_other"
        backend.metrics_put([MetricRow("s", s0 - 2, queue, "c1", {"r": 3, "f": 1, "c": 0.3, "h": {"10": 3}}, 60),
                             MetricRow("s", s0 - 1, queue, "c2", {"r": 1, "f": 0, "c": 0.1, "d": 7}, 60),
                             MetricRow("s", s0 - 1, other, "c3", {"r": 5}, 60),
                             MetricRow("m", bucket_of(now, "m"), queue, "c1", {"r": 4}, 600)])
        backend.metrics_put([MetricRow("s", s0 - 2, queue, "c1", {"r": 4, "f": 1, "c": 0.4, "h": {"10": 4}}, 60)])
        rows = sorted(backend.metrics_get("s", s0 - 5, queue), key=lambda r: r.bucket)
        assert [(r.bucket, r.source, r.data.get("r")) for r in rows] == [(s0 - 2, "c1", 4), (s0 - 1, "c2", 1)]
        assert rows[0].data["h"] == {"10": 4} and rows[1].data["d"] == 7
        assert {r.queue for r in backend.metrics_get("s", s0 - 5)} >= {queue, other}
        assert backend.metrics_get("s", s0, queue) == []
        assert [r.data["r"] for r in backend.metrics_get("m", bucket_of(now, "m") - 60, queue)] == [4]

    def test_lock_exclusive_and_owner_only_release(self, backend: StateBackend) -> None:
        name = _uid("lock")
        assert backend.acquire_lock(name, "a", 30)
        assert not backend.acquire_lock(name, "b", 30)
        assert backend.acquire_lock(name, "a", 30)  # the holder renews
        assert not backend.release_lock(name, "b")
        assert not backend.acquire_lock(name, "b", 30)
        assert backend.release_lock(name, "a")
        assert not backend.release_lock(name, "a")  # already released
        assert backend.acquire_lock(name, "b", 30)
        assert backend.release_lock(name, "b")

    def test_lock_expires_and_is_taken_over(self, backend: StateBackend) -> None:
        name = _uid("lock")
        assert backend.acquire_lock(name, "a", _SHORT)
        assert not backend.acquire_lock(name, "b", 30)
        wait_until(lambda: backend.acquire_lock(name, "b", 30), 15, message="expired lock taken over")
        assert not backend.release_lock(name, "a")  # a's lock expired: it must not free b's
        assert not backend.acquire_lock(name, "a", 30)
        assert backend.release_lock(name, "b")

    def test_lock_renewal_extends_ttl(self, backend: StateBackend) -> None:
        name = _uid("lock")
        assert backend.acquire_lock(name, "a", _SHORT)
        assert backend.acquire_lock(name, "a", 30)
        time.sleep(_SHORT + 0.2)  # past the first ttl: still held thanks to the renewal
        assert not backend.acquire_lock(name, "b", 30)
        backend.release_lock(name, "a")

    def test_lock_one_winner_among_threads(self, backend: StateBackend) -> None:
        name = _uid("lock")
        wins: list[str] = []
        barrier = threading.Barrier(8)

        def contend(i: int) -> None:
            barrier.wait()
            if backend.acquire_lock(name, f"owner{i}", 30):
                wins.append(f"owner{i}")

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(wins) == 1
        assert backend.release_lock(name, wins[0])

    def test_lock_context_manager(self, backend: StateBackend) -> None:
        name = _uid("lock")
        with backend.lock(name, "a", 30):
            assert not backend.acquire_lock(name, "b", 30)
            with pytest.raises(TimeoutError):
                with backend.lock(name, "b", 30, timeout=0.2):
                    pass
        assert backend.acquire_lock(name, "b", 30)
        backend.release_lock(name, "b")

    # ------------------------------------------------------------------ across processes
    def test_shared_across_processes(self, backend_cls: type[StateBackend], backend: StateBackend,
                                     queue: str) -> None:
        if not backend_cls.shared_across_processes:
            pytest.skip(f"{self.backend_name} is process-local")
        tid = _uid("t")
        self._child(f"sb.set_result({tid!r}, {{'result': 'from child'}}, 60)\n"
                    f"sb.set_flag({queue!r}, 'pause', True)\n"
                    f"sb.save_statuses({queue!r}, [{{'task_id': 'c1', 'success': True, 'time_start': 1.0}}], 60)\n")
        assert backend.get_result(tid) == {"result": "from child"}
        assert backend.get_flags(queue) == {"pause": True}
        assert [r["task_id"] for r in backend.query_statuses(queue)] == ["c1"]

    def test_lock_one_winner_among_processes(self, backend_cls: type[StateBackend], backend: StateBackend) -> None:
        if not backend_cls.shared_across_processes:
            pytest.skip(f"{self.backend_name} is process-local")
        name = _uid("lock")
        start_at = time.time() + 1.5  # children start together, after their imports
        code = (f"import os, time\n"
                f"time.sleep(max(0, {start_at!r} - time.time()))\n"
                f"print(int(sb.acquire_lock({name!r}, 'p%d' % os.getpid(), 30)))\n")
        prelude = (f"from funboost.state.base import resolve_state_backend_class\n"
                   f"sb = resolve_state_backend_class({self.backend_name!r})({self.backend_url!r})\n")
        procs = [subprocess.Popen([sys.executable, "-c", prelude + code], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            outs.append(int(out.strip()))
        assert sum(outs) == 1, outs
        assert not backend.acquire_lock(name, "parent", 30)

