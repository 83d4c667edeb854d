"""The README example, run as written (with the test DSN instead of the example host)."""
import threading

from funboost import BoosterParams, boost

from conftest import TEST_DSN, wait_for


def test_readme_example(queue_name):
    results = []
    lock = threading.Lock()

    @boost(BoosterParams(queue_name=queue_name, broker_kind="POSTGRES", state_backend="memory",
                         log_to_console=False, broker_exclusive_config={"dsn": TEST_DSN}))
    def add(x, y):
        with lock:
            results.append(x + y)
        return x + y

    add.push(1, 2)
    assert add.get_message_count() == 1
    add.consume()
    try:
        wait_for(lambda: results == [3], what="add(1, 2) ran")
        wait_for(lambda: add.queue_size().total == 0, what="acked")
    finally:
        add.stop_consume(10)
