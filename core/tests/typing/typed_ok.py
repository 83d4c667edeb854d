"""Typed use of boosters: mypy must accept every line of this file."""
from funboost import AsyncResult, Booster, BoosterParams, boost


@boost(BoosterParams(queue_name="typing_example_add", broker_kind="memory"))
def add(x: int, y: int = 1) -> int:
    return x + y


@BoosterParams(queue_name="typing_example_greet", broker_kind="memory")
def greet(name: str) -> str:
    return f"hello {name}"


handle: Booster[[int, int], int] = add
pushed: AsyncResult[int] = add.push(1, y=2)
local: int = add(3)
text: str = greet("ann")
later: AsyncResult[str] = greet.push(name="bob")
value: int = pushed.get()
