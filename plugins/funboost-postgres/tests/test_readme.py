"""The README example, run as written (with the test DSN instead of the example host)."""
from funboost.testing.table_queue import check_readme_example

from conftest import TEST_DSN


def test_readme_example(queue_name):
    check_readme_example(queue_name, "POSTGRES", {"dsn": TEST_DSN})
