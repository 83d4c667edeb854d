# Written in the original funboost's style: AioAsyncResult in asyncio code (await r.result,
# await r.status_and_result, set_callback with a coroutine), made from aio_push or from a task id, and the
# sync AsyncResult's wait_rpc_data_or_raise. Run as its own process; prints OK at the end.
import asyncio
import sys

from funboost import AioAsyncResult, AsyncResult, BoosterParams, BrokerEnum, boost

suffix = sys.argv[1]


@boost(BoosterParams(queue_name=f'aio_result_{suffix}', broker_kind=BrokerEnum.MEMORY_QUEUE, is_using_rpc_mode=True,
                     max_retry_times=0))
def add(x, y):
    if x < 0:
        raise ValueError('negative x')
    return x + y


seen = []


async def process_result(status_and_result: dict):
    await asyncio.sleep(0)
    seen.append(status_and_result['result'])


async def main():
    r = await add.aio_push(1, 2)
    assert isinstance(r, AioAsyncResult)
    assert await r.result == 3
    assert (await r.status_and_result)['success'] is True and await r.is_success()
    async_result = add.push(10, 20)
    aio_async_result = AioAsyncResult(task_id=async_result.task_id, timeout=30)
    assert await aio_async_result.result == 30
    await aio_async_result.set_callback(process_result)
    assert seen == [30]
    bad = await add.aio_push(-1, 0)
    try:
        await bad.wait_rpc_data_or_raise()
    except Exception as exc:
        assert 'negative x' in str(exc), exc
    else:
        raise AssertionError('a failed task did not raise')
    assert (await bad.wait_rpc_data_or_raise(raise_exception=False))['success'] is False
    many = [await add.aio_push(i, i) for i in range(5)]
    assert [d['result'] for d in await AioAsyncResult.batch_wait_rpc_data_or_raise(many)] == [0, 2, 4, 6, 8]


add.consume()
asyncio.run(main())
assert [d['result'] for d in AsyncResult.batch_wait_rpc_data_or_raise([add.push(1, 1), add.push(2, 2)])] == [2, 4]
assert add.push(3, 3).wait_rpc_data_or_raise()['result'] == 6
add.stop_consume()
print('OK')
