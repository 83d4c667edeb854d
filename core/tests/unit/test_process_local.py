"""funboost.process_local: per-process values, rebuilt in a real forked child."""
import itertools
import json
import os
import threading

import pytest

from funboost.process_local import ProcessLocal, ProcessLocalDict, fork_generation, process_cached

fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def in_forked_child(fn):
    """Run ``fn`` in a forked child; return what it returned (JSON), or raise what it raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            out = json.dumps({"ok": fn()})
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            out, code = json.dumps({"error": f"{type(exc).__name__}: {exc}"}), 1
        os.write(w, out.encode())
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    got = json.loads(data or b'{"error": "child wrote nothing"}')
    assert "error" not in got, got["error"]
    assert os.WEXITSTATUS(status) == 0
    return got["ok"]


def test_value_is_built_once_even_when_threads_race():
    counter = itertools.count()
    built = []
    start = threading.Barrier(8)

    def factory():
        n = next(counter)
        built.append(n)
        return {"n": n}

    cell = ProcessLocal(factory)
    seen = []

    def use():
        start.wait()
        seen.append(cell.get())

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built == [0]
    assert all(v is seen[0] for v in seen)


def test_peek_and_clear():
    cell = ProcessLocal(lambda: object())
    assert cell.peek() is None
    v = cell.get()
    assert cell.peek() is v
    assert cell.clear() is v
    assert cell.peek() is None
    assert cell.get() is not v  # rebuilt after clear


@fork_only
def test_forked_child_gets_a_fresh_value_and_the_parent_keeps_its_own():
    cell = ProcessLocal(lambda: {"pid": os.getpid(), "id": os.urandom(8).hex()})
    parent = cell.get()
    gen = fork_generation()

    def child():
        v = cell.get()
        return {"value": v, "again_same": cell.get() is v, "gen_changed": fork_generation() != gen}

    got = in_forked_child(child)
    assert got["value"]["pid"] != parent["pid"] and got["value"]["id"] != parent["id"]
    assert got["again_same"] and got["gen_changed"]
    assert cell.get() is parent  # the parent is untouched


@fork_only
def test_a_lock_held_by_a_parent_thread_at_fork_time_does_not_deadlock_the_child():
    release = threading.Event()
    entered = threading.Event()

    def slow_factory():
        entered.set()
        release.wait(10)
        return "parent's"

    cell = ProcessLocal(slow_factory)
    t = threading.Thread(target=cell.get)
    t.start()
    assert entered.wait(10)  # a parent thread now holds the cell's lock, inside the factory
    try:
        cell._factory = lambda: "child's"  # what the child's build will return
        assert in_forked_child(cell.get) == "child's"
    finally:
        release.set()
        t.join(10)


@fork_only
def test_on_stale_gets_the_parents_value_in_the_child_once():
    disposed = []
    cell = ProcessLocal(lambda: os.getpid(), on_stale=disposed.append)
    parent_value = cell.get()

    def child():
        first = cell.get()
        cell.get()
        return {"disposed": list(disposed), "value": first}

    got = in_forked_child(child)
    assert got["disposed"] == [parent_value]
    assert got["value"] != parent_value
    assert disposed == []  # nothing was disposed in the parent


@fork_only
def test_dict_is_empty_in_a_forked_child():
    d: ProcessLocalDict = ProcessLocalDict()
    a = d.get_or_create("a", lambda: ["parent"])
    assert d.get_or_create("a", lambda: ["other"]) is a
    assert len(d) == 1 and "a" in d

    def child():
        before = len(d)
        v = d.get_or_create("a", lambda: ["child"])
        return {"before": before, "value": v}

    assert in_forked_child(child) == {"before": 0, "value": ["child"]}
    assert d.get("a") is a


def test_dict_pop_if_keeps_a_newer_value():
    d: ProcessLocalDict = ProcessLocalDict()
    old = d.get_or_create("k", lambda: object())
    assert d.pop_if("k", old)
    new = d.get_or_create("k", lambda: object())
    assert not d.pop_if("k", old)
    assert d.get("k") is new
    assert d.clear() == [new] and len(d) == 0


@fork_only
def test_process_cached_decorator():
    calls = []

    @process_cached
    def conn(host, port):
        calls.append((host, port))
        return f"{host}:{port}@{os.getpid()}"

    assert conn("h", 1) is conn("h", 1)
    assert calls == [("h", 1)]
    assert in_forked_child(lambda: conn("h", 1)) != conn("h", 1)
