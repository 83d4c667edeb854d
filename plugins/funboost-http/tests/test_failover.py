"""Several consumers: round robin, failover when one is SIGKILLed, a call in flight on a killed consumer,
revival, no consumer serving. The suite is core's (shared by grpc, tcp and http); this runs it on http."""
import pytest
from funboost.testing.failover import *  # noqa: F401,F403 - the shared tests, collected here


@pytest.fixture
def failover_kind() -> str:
    return "HTTP"
