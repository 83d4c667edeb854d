# Written in the original funboost's style: a broker added as a publisher class + consumer class pair,
# registered with register_custom_broker under a number, and one given to a single queue with
# BrokerEnum.EMPTY and the override classes. Run as its own process; prints OK at the end.
import json
import sys
import threading
import time
from collections import deque

from funboost import (AbstractConsumer, AbstractPublisher, BoosterParams, BrokerEnum, ExceptionForRequeue, boost,
                      register_custom_broker)
from funboost.consumers.empty_consumer import EmptyConsumer
from funboost.publishers.empty_publisher import EmptyPublisher

suffix = sys.argv[1]
queue_name__deque_map = {}
confirmed = []
requeued = []


class DequePublisher(AbstractPublisher):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.msg_deque = queue_name__deque_map.setdefault(self.queue_name, deque())

    def _publish_impl(self, msg: str):
        self.msg_deque.append(msg)

    def clear(self):
        self.msg_deque.clear()

    def get_message_count(self):
        return len(self.msg_deque)

    def close(self):
        pass


class DequeConsumer(AbstractConsumer):
    def custom_init(self):
        self.msg_deque = queue_name__deque_map.setdefault(self.queue_name, deque())

    def _dispatch_task(self):
        while True:
            try:
                task_str = self.msg_deque.popleft()
            except IndexError:
                time.sleep(0.01)
                continue
            self._submit_task({'body': json.loads(task_str), 'raw': task_str})

    def _confirm_consume(self, kw):
        confirmed.append(kw['raw'])

    def _requeue(self, kw):
        requeued.append(kw['raw'])
        self.msg_deque.append(json.dumps(kw['body']))


BrokerEnum.BROKER_KIND_DEQUE = 102
register_custom_broker(BrokerEnum.BROKER_KIND_DEQUE, DequePublisher, DequeConsumer)

done = []
done_lock = threading.Lock()
tried = set()


@boost(f'custom_deque_{suffix}', broker_kind=BrokerEnum.BROKER_KIND_DEQUE, qps=0, concurrent_num=3,
       max_retry_times=1, is_push_to_dlx_queue_when_retry_max_times=True)
def f(x):
    if x == 7 and x not in tried:  # first run requeued through the user's _requeue
        tried.add(x)
        raise ExceptionForRequeue('again')
    if x == 13:
        raise ValueError('always fails: dead-lettered')
    with done_lock:
        done.append(x)
    return x * 10


def wait_for(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


assert isinstance(f.publisher, AbstractPublisher)
for i in range(20):
    f.push(i)
assert f.publisher.get_message_count() == 20, f.publisher.get_message_count()
f.consume()
assert wait_for(lambda: len(done) == 19), sorted(done)
assert sorted(done) == [i for i in range(20) if i != 13]
assert 7 in tried and 7 in done  # requeued (republished through _publish_impl), then run again
dlx = queue_name__deque_map[f'custom_deque_{suffix}_dlx']
assert wait_for(lambda: len(dlx) == 1)
dead = json.loads(dlx[0])
assert dead['x'] == 13 and 'always fails' in json.dumps(dead), dead
assert wait_for(lambda: len(confirmed) >= 20), len(confirmed)  # 19 done + the dead-lettered one
f.stop_consume()

# stopping hands every message that did not run back through the user's _requeue: nothing is lost
gate = threading.Event()
started = []


@boost(f'custom_deque_stop_{suffix}', broker_kind=102, concurrent_num=1)
def slow(x):
    started.append(x)
    gate.wait(30)


for i in range(10):
    slow.push(i)
slow.consume()
assert wait_for(lambda: started)
stopper = threading.Thread(target=slow.stop_consume)
stopper.start()
time.sleep(0.2)  # let the stop begin while the first task still runs
gate.set()
stopper.join(30)
left = queue_name__deque_map[f'custom_deque_stop_{suffix}']
assert len(started) + len(left) == 10, (started, list(left))
assert sorted(started + [json.loads(m)['x'] for m in left]) == list(range(10))
assert requeued, 'nothing was handed back through _requeue'

# a queue of its own made of EmptyPublisher / EmptyConsumer subclasses (BrokerEnum.EMPTY)
store = deque()


class ListPublisher(EmptyPublisher):
    def custom_init(self):
        assert self.publisher_params.broker_exclusive_config.get('store_name') in (None, 'main'), \
            self.publisher_params.broker_exclusive_config

    def _publish_impl(self, msg):
        store.append(msg)

    def clear(self):
        store.clear()

    def get_message_count(self):
        return len(store)

    def close(self):
        pass


class ListConsumer(EmptyConsumer):
    def custom_init(self):
        assert self.consumer_params.broker_exclusive_config == {'store_name': 'main'}, self.consumer_params
        assert self._queue_name == self.queue_name

    def _dispatch_task(self):
        while True:
            if store:
                self._submit_task({'body': store.popleft()})
            else:
                time.sleep(0.01)

    def _confirm_consume(self, kw):
        pass

    def _requeue(self, kw):
        store.append(kw['body'])


results = []


@boost(BoosterParams(queue_name=f'custom_empty_{suffix}', broker_kind=BrokerEnum.EMPTY,
                     broker_exclusive_config={'store_name': 'main'},  # the user's own settings
                     consumer_override_cls=ListConsumer, publisher_override_cls=ListPublisher))
def g(a, b):
    results.append(a + b)


for i in range(5):
    g.push(i, b=1)
assert g.publisher.get_message_count() == 5
g.publisher.clear()
assert g.publisher.get_message_count() == 0
for i in range(5):
    g.push(i, b=1)
g.consume()
assert wait_for(lambda: sorted(results) == [1, 2, 3, 4, 5]), results
g.stop_consume()


class Incomplete(EmptyConsumer):  # _requeue missing: fails when the consumer is made, naming it
    def _dispatch_task(self):
        pass

    def _confirm_consume(self, kw):
        pass


h = boost(BoosterParams(queue_name=f'custom_incomplete_{suffix}', broker_kind=BrokerEnum.EMPTY,
                        consumer_override_cls=Incomplete, publisher_override_cls=ListPublisher))(lambda: None)
try:
    h.consume()
except TypeError as exc:
    assert '_requeue' in str(exc), exc
else:
    raise AssertionError('an EmptyConsumer without _requeue was accepted')
print('OK')
