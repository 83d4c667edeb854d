"""Through the engine: the README example, the documented curl requests (sent with the standard library),
push and sync_call results and remote errors."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import threading

from funboost.testing.serving import (assert_a_call_is_answered_by_the_run_after_a_requeue, assert_pushes_run,
                                      assert_sync_call_and_remote_error, serving_booster,
                                      serving_divide)

from funboost_http import HttpBroker
from funboost_http import RemoteTaskError as HttpRemoteTaskError
from support import free_port, raw_request, wait_until

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _readme_blocks(lang: str) -> list[str]:
    with open(README) as f:
        return re.findall(rf"```{lang}\n(.*?)```", f.read(), re.S)


def test_readme_example_runs(queue_name):
    port = free_port()
    code = _readme_blocks("python")[0]
    assert '"port": 8765' in code and 'queue_name="add"' in code
    code = code.replace('"port": 8765', f'"port": {port}').replace('queue_name="add"', f'queue_name="{queue_name}"')
    ns: dict = {"__name__": "__main__"}
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, README, "exec"), ns)
        assert out.getvalue().strip() == "7"
        add = ns["add"]
        assert wait_until(lambda: add.broker.queue_size().ready == 0 and add.broker.queue_size().in_flight == 0, 20)
    finally:
        if "add" in ns:
            ns["add"].stop_consume(10)


def _curl_requests() -> list[tuple[str, str, dict, bytes]]:
    """(method, url, headers, body) of every curl command in the README."""
    out = []
    for block in _readme_blocks("bash"):
        for line in block.splitlines():
            if not line.startswith("curl "):
                continue
            args = shlex.split(line)[1:]
            method, url, headers, body = "GET", "", {}, b""
            it = iter(args)
            for a in it:
                if a == "-X":
                    method = next(it)
                elif a == "-H":
                    k, v = next(it).split(":", 1)
                    headers[k.strip()] = v.strip()
                elif a == "-d":
                    body = next(it).encode()
                    method = "POST" if method == "GET" else method
                else:
                    url = a
            out.append((method, url, headers, body))
    return out


def test_documented_curl_requests_with_a_plain_http_client(queue_name):
    """The wire format as documented: the README's curl commands, sent with urllib (no funboost code on
    the client side), against a consumer of the README's function."""
    port = free_port()
    seen = []

    def add(x: int, y: int) -> int:
        seen.append((x, y))
        return x + y

    with serving_booster("HTTP", queue_name, add, {"port": port}, max_retry_times=0) as add:
        requests = _curl_requests()
        assert [r[1].rsplit("/", 1)[1] for r in requests] == ["messages", "call"]
        (m1, url1, h1, b1), (m2, url2, h2, b2) = requests
        base = f"http://127.0.0.1:{port}/queues/{queue_name}/"
        assert url1.startswith("http://127.0.0.1:8765/queues/add/")
        status, reply = raw_request(base + "messages", m1, b1, h1)
        assert (status, reply) == (202, {"accepted": 1})
        assert wait_until(lambda: (1, 2) in seen, 20)
        status, reply = raw_request(base + "call", m2, b2, h2)
        assert status == 200 and reply["success"] is True and reply["result"] == 7 and reply["task_id"]
        # a batch is a JSON list of envelopes
        status, reply = raw_request(base + "messages", "POST", json.dumps([{"x": i, "y": 0} for i in range(5)]).encode())
        assert (status, reply) == (202, {"accepted": 5})
        assert wait_until(lambda: len(seen) >= 7, 20)
        status, reply = raw_request(f"http://127.0.0.1:{port}/queues/{queue_name}")
        assert status == 200 and reply["queue"] == queue_name and reply["consumers"] >= 1 and reply["capacity"] > 0
        assert raw_request(f"http://127.0.0.1:{port}/healthz")[0] == 200
        assert raw_request(f"http://127.0.0.1:{port}/healthz?queue={queue_name}") == (
            200, {"status": "serving", "queue": queue_name})
        assert raw_request(f"http://127.0.0.1:{port}/healthz?queue=other")[0] == 503
        # a function error comes back in the status record, with HTTP 200 (the call itself worked)
        status, reply = raw_request(base + "call", "POST", b'{"x": 1, "y": "a"}')
        assert status == 200 and reply["success"] is False and reply["exception_type"] == "TypeError"


def test_push_and_sync_call_through_boost(queue_name, port):
    with serving_divide("HTTP", queue_name, {"port": port}) as (divide, seen):
        assert_sync_call_and_remote_error(divide, HttpRemoteTaskError)
        # arguments that do not fit the function (refused by sync_call before sending; a foreign client
        # can still send them): 400 with the reason, nothing runs
        status, reply = raw_request(f"http://127.0.0.1:{port}/queues/{queue_name}/call", "POST", b'{"a": 1, "c": 3}')
        assert status == 400 and "arguments do not fit" in reply["message"], reply
        assert_pushes_run(divide, seen, 20)
        assert len(seen) == 22
        # many threads at once on one keep-alive pool
        results: list = []
        threads = [threading.Thread(target=lambda k=k: results.append(divide.sync_call(k, b=1, timeout=20)))
                   for k in range(16)]
        [t.start() for t in threads]
        [t.join(30) for t in threads]
        assert sorted(results) == [float(k) for k in range(16)]


def test_publisher_in_another_broker_instance_and_stats(queue_name, port):
    consumer = HttpBroker(queue_name, HttpBroker.parse_options({"port": port}))
    consumer.serve()
    try:
        pub = HttpBroker(queue_name, HttpBroker.parse_options({"addresses": [f"http://127.0.0.1:{port}"]}))
        from funboost.plugins.broker import OutgoingMessage
        pub.publish([OutgoingMessage(body=json.dumps({"x": i})) for i in range(3)])
        size = pub.queue_size()
        assert (size.ready, size.in_flight) == (3, 0)
        assert pub.health() == {f"127.0.0.1:{port}": "SERVING"}
        assert pub.purge() == 3
        assert consumer.queue_size().ready == 0
    finally:
        consumer.close()


def test_a_call_that_outlives_its_timeout_gets_504_at_the_deadline(queue_name):
    """The documented 504: a call runs inline in a handler thread, which cannot answer at the caller's
    deadline itself; the server's deadline watcher does, the late result is dropped, the server keeps
    serving. Seen with a plain HTTP client, which waits as long as the server lets it."""
    import time
    port = free_port()
    finished = []

    def slow(sleep: float) -> str:
        time.sleep(sleep)
        finished.append(sleep)
        return "late"

    with serving_booster("HTTP", queue_name, slow, {"port": port}, max_retry_times=0) as slow:
        url = f"http://127.0.0.1:{port}/queues/{queue_name}/call"
        for how in ("?timeout=0.5", "header"):
            t0 = time.monotonic()
            status, reply = raw_request(url + (how if how != "header" else ""), "POST", b'{"sleep": 2.5}',
                                        headers={"X-Funboost-Timeout": "0.5"} if how == "header" else None)
            assert status == 504 and reply["error"] == "CallDeadlineExceeded", (status, reply)
            assert time.monotonic() - t0 < 2.0, "answered at the deadline, not when the function returned"
        assert raw_request(url + "?timeout=5", "POST", b'{"sleep": 0}')[1]["result"] == "late"
        assert wait_until(lambda: finished.count(2.5) == 2, 10)


def test_arguments_that_do_not_fit_get_400_and_nothing_enters(queue_name):
    """Issue 17: wrong arguments get a 4xx with a JSON body (they were accepted with 202 and dead-lettered
    by the engine afterwards; a call got 200 with a DeadLettered failure)."""
    port = free_port()

    def add(x, y):
        return x + y

    with serving_booster("HTTP", queue_name, add, {"port": port}) as add:
        base = f"http://127.0.0.1:{port}/queues/{queue_name}"
        assert wait_until(lambda: raw_request(f"http://127.0.0.1:{port}/healthz")[0] == 200, 10)
        for path, body, words in (("/messages", b'{"x": 1}', "missing ['y']"),
                                  ("/messages", b'[{"x": 1, "y": 2}, {"x": 1, "y": 2, "z": 3}]', "unknown ['z']"),
                                  ("/call?timeout=5", b'{"x": 1}', "missing ['y']"),
                                  ("/messages", b'{"x": 1, "y": 2, "extra": 5}', "'extra' must be a JSON object")):
            status, reply = raw_request(base + path, "POST", body)
            assert status == 400 and reply["error"] == "BadRequest" and words in reply["message"], (path, reply)
        assert add.broker.queue_size().ready == 0  # nothing of a refused batch entered
        status, reply = raw_request(base + "/call?timeout=5", "POST", b'{"x": 1, "y": 2}')
        assert (status, reply["success"], reply["result"]) == (200, True, 3), reply


def test_a_sync_call_is_answered_by_the_run_after_a_requeue(queue_name):
    assert_a_call_is_answered_by_the_run_after_a_requeue("HTTP", queue_name)
