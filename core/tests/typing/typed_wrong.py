"""Typed use of boosters with mistakes: mypy must report each marked line."""
from funboost import AsyncResult, BoosterParams, boost


@boost(BoosterParams(queue_name="typing_example_add2", broker_kind="memory"))
def add(x: int, y: int = 1) -> int:
    return x + y


add.push("one")  # WRONG: str for int
add.push(1, z=3)  # WRONG: unknown keyword
add(1, 2, 3)  # WRONG: too many arguments
text: AsyncResult[str] = add.push(1)  # WRONG: AsyncResult[int]


@boost(BoosterParams(queue_name="typing_example_fetch3", broker_kind="memory", concurrent_mode="async"))
async def fetch(n: int) -> int:
    return n * 2


fetch.push("three")  # WRONG: str for int
as_text: str = fetch.push(3).get()  # WRONG: the result is an int
