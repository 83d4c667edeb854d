import uuid
import warnings

import pytest
from pydantic import ValidationError

from funboost import BoosterParams, Booster, BrokerEnum, TaskOptions, boost


def test_extra_fields_are_forbidden():
    with pytest.raises(ValidationError, match="qsp"):
        BoosterParams(queue_name="q", broker_kind="memory", qsp=5)


def test_subclass_shares_defaults_without_annotations():
    class MyParams(BoosterParams):
        broker_kind = BrokerEnum.MEMORY_QUEUE
        max_retry_times = 7

    p = MyParams(queue_name="q1")
    assert p.broker_kind == "MEMORY_QUEUE" and p.max_retry_times == 7
    assert MyParams(queue_name="q2", max_retry_times=1).max_retry_times == 1


def test_booster_params_used_directly_as_decorator():
    @BoosterParams(queue_name="direct_deco", broker_kind="memory")
    def f(x):
        return x * 2

    assert isinstance(f, Booster)
    assert f(21) == 42


def test_unknown_kind_fails_at_decoration_with_install_hint():
    with pytest.raises(ValidationError) as ei:
        @boost(BoosterParams(queue_name="q", broker_kind="KAFKA_NOT_A_KIND"))
        def f(x):
            pass
    assert "unknown broker_kind" in str(ei.value) and "Installed broker kinds" in str(ei.value)


def test_unknown_kind_names_the_distribution_to_install():
    if not _not_installed("grpc"):
        pytest.skip("funboost-grpc is installed here")
    with pytest.raises(ValidationError, match="pip install funboost-grpc"):
        BoosterParams(queue_name="q", broker_kind="GRPC")


def _not_installed(kind):
    from funboost.plugins.manager import get_broker_registry
    return kind not in get_broker_registry().installed_names()


def test_broker_kind_is_case_insensitive_and_aliased():
    a = BoosterParams(queue_name="q", broker_kind="memory").broker_class()
    b = BoosterParams(queue_name="q", broker_kind="MEMORY_QUEUE").broker_class()
    c = BoosterParams(queue_name="q", broker_kind="Local_Python_Queue").broker_class()
    assert a is b is c


def test_original_variant_names_resolve_as_strings():
    """The original funboost's BrokerEnum values are its names: a variant spelled as a string (code or
    configuration written for the original) resolves to the kind BrokerEnum folds it into."""
    assert BoosterParams(queue_name="q", broker_kind="FASTEST_MEM_QUEUE").broker_class() is \
        BoosterParams(queue_name="q", broker_kind="memory").broker_class()
    # the original's own spelling, lower-case letters included
    from funboost.plugins.manager import original_kind_target
    assert original_kind_target("KAFKA_CONFLUENT_SASlPlAIN") == "kafka"
    if _not_installed("kafka"):
        with pytest.raises(ValidationError, match="original funboost's name of the kind 'kafka'.*pip install funboost-kafka"):
            BoosterParams(queue_name="q", broker_kind="KAFKA_CONFLUENT")
    with pytest.raises(ValidationError, match="no plugin"):  # kinds without a plugin still say so
        BoosterParams(queue_name="q", broker_kind="NSQ")


def test_broker_exclusive_config_is_validated():
    # the error names the setting and the kind, not a top-level field of that name
    with pytest.raises(ValidationError, match=r"broker_exclusive_config of kind 'memory': unknown key 'nope'"):
        BoosterParams(queue_name="q", broker_kind="memory", broker_exclusive_config={"nope": 1})


def test_deprecated_spelling_is_accepted_with_warning():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        p = BoosterParams(queue_name="q", broker_kind="memory",
                          function_result_status_persistance_conf={"is_save_status": True})
    assert p.function_result_status_persistence_conf.is_save_status
    assert any(issubclass(x.category, DeprecationWarning) for x in w)


def test_task_options_countdown_and_eta_exclusive():
    with pytest.raises(ValidationError):
        TaskOptions(countdown=1, eta=5.0)


def test_qps_raises_default_concurrency_and_single_thread_forces_one():
    assert BoosterParams(queue_name="q", broker_kind="memory", qps=5).concurrent_num == 500
    assert BoosterParams(queue_name="q", broker_kind="memory", qps=5, concurrent_num=20).concurrent_num == 20
    assert BoosterParams(queue_name="q", broker_kind="memory", concurrent_mode="single_thread").concurrent_num == 1
    assert BoosterParams(queue_name="q", broker_kind="memory", concurrent_mode="SOLO").concurrent_mode == "single_thread"


def test_every_decorator_form_of_the_original_is_validated():
    """boost / Booster take a BoosterParams, a queue name, queue_name=, boost_params= and keyword overrides
    beside a BoosterParams; every form goes through validation (a keyword beside BoosterParams once went
    through model_copy(update=...), which accepted a misspelt field silently)."""
    class MyParams(BoosterParams):
        broker_kind: str = "memory"
        max_retry_times: int = 7

    f = boost(MyParams(queue_name="forms_a"), qps=2)(lambda x: x)
    assert type(f.params) is MyParams and f.params.max_retry_times == 7 and f.params.qps == 2
    assert f.params.concurrent_num == 500  # derived from qps again, as for BoosterParams(qps=2)
    g = boost("ignored", boost_params=BoosterParams(queue_name="forms_b", broker_kind="memory"), qps=4)(lambda x: x)
    assert g.queue_name == "forms_b" and g.params.qps == 4
    h = Booster("forms_c", broker_kind="memory", max_retry_times=1)(lambda x: x)
    assert h.params.queue_name == "forms_c" and h.params.max_retry_times == 1
    with pytest.raises(ValidationError, match="qpss"):
        boost(BoosterParams(queue_name="forms_d", broker_kind="memory"), qpss=3)
    with pytest.raises(ValidationError):
        boost(BoosterParams(queue_name="forms_e", broker_kind="memory"), broker_kind="no_such_kind")


@pytest.mark.parametrize("options", [{"function_timeout": -1}, {"max_retry_times": -1}, {"msg_expire_seconds": -1},
                                     {"misfire_grace_time": -1}, {"function_timeout": float("inf")}])
def test_task_options_refuse_what_the_consumer_would_dead_letter(options):
    """Accepted at push, these made the consumer dead-letter the message as malformed (the function never ran,
    an RPC caller waited out its timeout): refused where they are written."""
    from funboost import TaskOptions
    with pytest.raises(ValidationError, match=f"TaskOptions '{next(iter(options))}'"):
        TaskOptions(**options)


def test_negative_max_retry_times_and_empty_kill_ids_are_refused():
    with pytest.raises(ValidationError, match="max_retry_times"):
        BoosterParams(queue_name="q", max_retry_times=-1)  # behaved as 0 silently
    from funboost import boost
    f = boost(BoosterParams(queue_name=f"kill_ids_{id(object())}", broker_kind="memory", state_backend="memory",
                            log_to_console=False))(lambda: None)
    for bad in (None, ""):
        with pytest.raises(ValueError, match="task id"):
            f.kill_task(bad)


def test_error_messages_read_as_sentences():
    """The install hint ends its sentence; a model-level option error names no fake '?' key."""
    from funboost.plugins.manager import BrokerRegistry
    text = BrokerRegistry._unknown_message(None, "REDIS_ACK_ABLE")  # (also when funboost-redis is installed)
    assert "pip install funboost-redis. " in text, text

    from pydantic import model_validator
    from funboost.params import _check_broker_options
    from funboost.plugins.broker import BrokerOptions
    from funboost.brokers.memory import MemoryBroker

    class Opts(BrokerOptions):
        a: int = 1
        b: int = 2

        @model_validator(mode="after")
        def _check(self):
            if self.a > self.b:
                raise ValueError("a must not exceed b")
            return self

    class B(MemoryBroker):
        options_model = Opts

    with pytest.raises(ValueError) as exc2:
        _check_broker_options(B, {"a": 3})
    assert "'?'" not in str(exc2.value) and "a must not exceed b" in str(exc2.value)


def test_multi_process_consume_refuses_an_in_process_kind():
    """Each child ran its own copy of what was pushed before the fork (100 tasks ran 200 times with 2
    processes), and nothing pushed after."""
    @boost(BoosterParams(queue_name=f"mpmem_{uuid.uuid4().hex[:6]}", broker_kind="MEMORY_QUEUE",
                         state_backend="memory", log_to_console=False))
    def f(x):
        return x

    with pytest.raises(ValueError, match="in-process only"):
        f.multi_process_consume(2)


def test_original_exclusive_config_keys_are_accepted_with_a_notice():
    # the original's broker_exclusive_config keys (its benchmark's pull_msg_batch_size, the memory queue's maxsize)
    # must not stop an original user's code at decoration time; a typo stays an error
    from funboost.params import FunboostCompatWarning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = BoosterParams(queue_name=f"orig_excl_{uuid.uuid4().hex}", broker_kind=BrokerEnum.MEMORY_QUEUE,
                          broker_exclusive_config={"pull_msg_batch_size": 100, "maxsize": 10})
    assert p.broker_exclusive_config == {}
    notes = [str(w.message) for w in caught if issubclass(w.category, FunboostCompatWarning)]
    assert any("pull_msg_batch_size" in n for n in notes) and any("maxsize" in n for n in notes), notes
    with pytest.raises(ValidationError, match="pull_msg_batch_sise"):
        BoosterParams(queue_name="orig_excl_typo", broker_kind="memory",
                      broker_exclusive_config={"pull_msg_batch_sise": 1})


def test_funboost_current_task_is_callable_like_the_original():
    from funboost import fct, funboost_current_task
    got = {}

    @boost(BoosterParams(queue_name=f"orig_fct_call_{uuid.uuid4().hex}", broker_kind="memory"))
    def f(x):
        t = funboost_current_task()
        got["same"] = t is fct
        got["tid"] = t.task_id
        return x

    r = f.push(1)
    f.consume()
    import time
    deadline = time.time() + 30
    while "tid" not in got and time.time() < deadline:
        time.sleep(0.05)
    f.stop_consume()
    assert got == {"same": True, "tid": r.task_id}
