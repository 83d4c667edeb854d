# Original-style script: a consumer class that converts foreign messages, fct helpers, booster.publisher
# methods, and broker kinds without a plugin. Run as its own process with the kind as argv[1].
import json
import sys
import threading
from funboost import AbstractConsumer, BoosterParams, BrokerEnum, boost, fct

kind = sys.argv[1]
queue = sys.argv[2]
seen = {}
done = threading.Event()


class ForeignMsgConsumer(AbstractConsumer):
    def _user_convert_msg_before_run(self, msg):
        if isinstance(msg, dict) and "payload" in msg:  # another program's format
            return {"x": msg["payload"]["value"], "y": 100}
        return msg


@boost(BoosterParams(queue_name=queue, broker_kind=kind, consumer_override_cls=ForeignMsgConsumer,
                     is_using_rpc_mode=True, concurrent_num=2))
def add(x, y):
    status = fct.function_result_status.get_status_dict()
    seen[x] = (x + y, status["queue_name"], fct.task_id == status["task_id"])
    if len(seen) == 2:
        done.set()
    return x + y


add.publisher.clear()
assert add.publisher.get_message_count() == 0
add.push(1, 2)
# a message another program wrote: not funboost's format
from funboost.plugins.broker import OutgoingMessage  # noqa: E402
add.broker.publish([OutgoingMessage(body=json.dumps({"payload": {"value": 7}}), task_id="foreign-1")])
assert add.publisher.get_message_count() == 2, add.publisher.get_message_count()
add.consume()
assert done.wait(60), seen
assert seen[1] == (3, queue, True) and seen[7] == (107, queue, True), seen
try:
    assert add.push(5, 6).get(timeout=60) == 11
    if add.broker_cls.capabilities.request_response:  # sync_call only where the kind has it
        assert add.publisher.sync_call(5, 6, timeout=60) == 11
    else:
        try:
            add.publisher.sync_call(5, 6, timeout=5)
        except NotImplementedError as exc:
            assert "push(...).get()" in str(exc)
        else:
            raise AssertionError("sync_call on a kind without request/response")
finally:
    add.stop_consume()

try:
    BoosterParams(queue_name="q", broker_kind=BrokerEnum.LMDB)
except ValueError as exc:  # pydantic's ValidationError wraps UnknownBrokerKind
    assert "no plugin" in str(exc), str(exc)
else:
    raise AssertionError("LMDB resolved")
print("OK")
