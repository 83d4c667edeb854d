"""The README example, run as written on each database (test URL and table prefix instead of the example's)."""
from funboost.testing.table_queue import check_readme_example

from conftest import options_for


def test_readme_example(db, queue_name):
    check_readme_example(queue_name, "SQLALCHEMY", options_for(db))
