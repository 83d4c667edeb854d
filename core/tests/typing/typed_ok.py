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


@boost(BoosterParams(queue_name="typing_example_fetch", broker_kind="memory", concurrent_mode="async"))
async def fetch(n: int) -> int:
    return n * 2


@BoosterParams(queue_name="typing_example_fetch2", broker_kind="memory", concurrent_mode="async")
async def fetch2(n: int) -> str:
    return str(n)


fetched: int = fetch.push(3).get()  # the coroutine's result, not the coroutine
fetched2: str = fetch2.push(n=4).get()


async def awaits_results() -> None:
    direct: int = await fetch(1)  # a local call returns the coroutine
    result: int = await (await fetch.aio_push(2)).result
    del direct, result
