# Original-style script: instance- and class-method consumers, and an async consumer on the user's own
# running event loop (specify_async_loop). Run as its own process; prints OK at the end.
import asyncio
import sys
import threading
from funboost import BoosterParams, BrokerEnum, ConcurrentModeEnum, boost

suffix = sys.argv[1]
results = {}
got_all = threading.Event()


def record(key, value):
    results[key] = value
    if len(results) == 3:
        got_all.set()


class Multiplier:
    def __init__(self, factor):
        self.obj_init_params = {"factor": factor}  # how the consumer rebuilds the instance
        self.factor = factor

    @boost(BoosterParams(queue_name=f"compat_instance_{suffix}", broker_kind=BrokerEnum.MEMORY_QUEUE))
    def times(self, x):
        record("instance", x * self.factor)

    @classmethod
    @boost(BoosterParams(queue_name=f"compat_class_{suffix}", broker_kind=BrokerEnum.MEMORY_QUEUE))
    def name_of(cls, x):
        record("class", f"{cls.__name__}:{x}")


user_loop = asyncio.new_event_loop()
threading.Thread(target=user_loop.run_forever, daemon=True).start()  # the user's loop, already running


@boost(BoosterParams(queue_name=f"compat_async_{suffix}", broker_kind=BrokerEnum.MEMORY_QUEUE,
                     concurrent_mode=ConcurrentModeEnum.ASYNC, specify_async_loop=user_loop))
async def on_user_loop(x):
    record("async", (x, asyncio.get_running_loop() is user_loop))


Multiplier(3).times.push(5)
Multiplier.name_of.push(7)
on_user_loop.push(9)
for b in (Multiplier.times, Multiplier.name_of, on_user_loop):
    b.consume()
assert got_all.wait(60), results
assert results == {"instance": 15, "class": "Multiplier:7", "async": (9, True)}, results
for b in (Multiplier.times, Multiplier.name_of, on_user_loop):
    b.stop_consume()
print("OK")
