import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from funboost.testing.fixtures import port, queue_name_fixture  # noqa: E402,F401  (port: the fixture)

queue_name = queue_name_fixture("test_grpc_")
