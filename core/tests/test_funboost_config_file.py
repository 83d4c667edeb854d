"""The original's funboost_config.py: read once, mapped to environment variables (the environment wins),
passwords hidden in the notice, nothing written."""
import os
import sys
import textwrap
import warnings

import pytest

from funboost import funboost_config_deafult as cfg
from funboost.params import FunboostCompatWarning

VARS = [env for env in cfg.BROKER_CONN_MAPPING] + ["FUNBOOST_NO_CONFIG_FILE", "FUNBOOST_TIMEZONE"]


@pytest.fixture
def project(tmp_path, monkeypatch):
    for var in VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("funboost_config", None)
    saved = {c: {k: v for k, v in vars(c).items() if k.isupper()}
             for c in (cfg.BrokerConnConfig, cfg.FunboostCommonConfig)}
    cfg._reset_for_tests()
    yield tmp_path
    sys.modules.pop("funboost_config", None)
    for c, values in saved.items():  # (a TIMEZONE left behind would move other tests' schedules)
        for k, v in values.items():
            setattr(c, k, v)
    cfg._reset_for_tests()
    for var in VARS:  # what the pick-up set, it set in os.environ itself
        os.environ.pop(var, None)


def _pick_up():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = cfg.use_config_form_funboost_config_module()
        again = cfg.use_config_form_funboost_config_module()
    assert again is result
    return result, [str(w.message) for w in seen if issubclass(w.category, FunboostCompatWarning)]


def test_mapping_and_notice(project, monkeypatch):
    (project / "funboost_config.py").write_text(textwrap.dedent("""
        class BrokerConnConfig:
            REDIS_HOST = 'redis.internal'
            REDIS_PASSWORD = 'p@ss word'
            REDIS_PORT = 6380
            REDIS_DB = 7
            REDIS_DB_FILTER_AND_RPC_RESULT = 8
            RABBITMQ_USER, RABBITMQ_PASS, RABBITMQ_HOST, RABBITMQ_PORT, RABBITMQ_VIRTUAL_HOST = 'u', 'pw', 'mq', 5673, '/'
            KAFKA_BOOTSTRAP_SERVERS = ['k1:9092', 'k2:9092']
            KFFKA_SASL_CONFIG = {'security_protocol': 'SASL_PLAINTEXT', 'sasl_plain_username': 'ku'}
            SQLLITE_QUEUES_PATH = '/sqllite_queues'
            NATS_URL = 'nats://127.0.0.1:4222'
    """))
    monkeypatch.setenv("FUNBOOST_NATS_URL", "nats://mine:4222")
    files = sorted(os.listdir(project))
    result, notices = _pick_up()
    assert os.environ["FUNBOOST_REDIS_URL"] == "redis://:p%40ss%20word@redis.internal:6380/7"
    assert os.environ["FUNBOOST_STATE_REDIS_URL"] == "redis://:p%40ss%20word@redis.internal:6380/8"
    assert os.environ["FUNBOOST_RABBITMQ_URL"] == "amqp://u:pw@mq:5673/%2F"
    assert os.environ["FUNBOOST_KAFKA_BOOTSTRAP_SERVERS"] == "k1:9092,k2:9092"
    assert os.environ["FUNBOOST_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert os.environ["FUNBOOST_KAFKA_SASL_USERNAME"] == "ku"
    assert "FUNBOOST_SQLITE_DIR" not in os.environ  # the template's default folder means "not configured"
    assert os.environ["FUNBOOST_NATS_URL"] == "nats://mine:4222" and result.kept_from_env == ["FUNBOOST_NATS_URL"]
    assert cfg.BrokerConnConfig.REDIS_HOST == "redis.internal"
    assert len(notices) == 1 and "p%40ss" not in notices[0] and "pw@" not in notices[0], notices
    assert "redis://:***@redis.internal:6380/7" in notices[0]
    assert sorted(n for n in os.listdir(project) if n != "__pycache__") == files


def test_the_original_url_templates_with_special_characters_in_the_password(project):
    """The original's template builds REDIS_URL / RABBITMQ_URL from the fields with the password unquoted:
    "p@ss:w/rd#1%" made a URL that does not parse (the first push failed: "Port could not be cast to
    integer value as 'w'"). Such a URL is built from the fields, quoted."""
    (project / "funboost_config.py").write_text(textwrap.dedent("""
        class BrokerConnConfig:
            REDIS_HOST = '127.0.0.1'
            REDIS_USERNAME = ''
            REDIS_PASSWORD = 'p@ss:w/rd#1%'
            REDIS_PORT = 6492
            REDIS_DB = 4
            REDIS_DB_FILTER_AND_RPC_RESULT = 5
            REDIS_URL = f'redis://{REDIS_USERNAME}:{REDIS_PASSWORD}@{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}'
            RABBITMQ_USER, RABBITMQ_PASS, RABBITMQ_HOST, RABBITMQ_PORT, RABBITMQ_VIRTUAL_HOST = 'u', 'a/b@c', 'mq', 5672, '/'
            RABBITMQ_URL = f'amqp://{RABBITMQ_USER}:{RABBITMQ_PASS}@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{RABBITMQ_VIRTUAL_HOST}'
    """))
    _pick_up()
    assert os.environ["FUNBOOST_REDIS_URL"] == "redis://:p%40ss%3Aw%2Frd%231%25@127.0.0.1:6492/4"
    assert os.environ["FUNBOOST_STATE_REDIS_URL"] == "redis://:p%40ss%3Aw%2Frd%231%25@127.0.0.1:6492/5"
    assert os.environ["FUNBOOST_RABBITMQ_URL"] == "amqp://u:a%2Fb%40c@mq:5672/%2F"
    from urllib.parse import unquote, urlsplit
    parts = urlsplit(os.environ["FUNBOOST_REDIS_URL"])
    assert (parts.port, unquote(parts.password)) == (6492, "p@ss:w/rd#1%")


def test_redis_url_wins_and_turning_it_off(project, monkeypatch):
    (project / "funboost_config.py").write_text("class BrokerConnConfig:\n    REDIS_URL = 'redis://h:1/2'\n")
    monkeypatch.setenv("FUNBOOST_NO_CONFIG_FILE", "1")
    result, notices = _pick_up()
    assert result.path is None and not notices and "FUNBOOST_REDIS_URL" not in os.environ
    cfg._reset_for_tests()
    monkeypatch.delenv("FUNBOOST_NO_CONFIG_FILE")
    _pick_up()
    assert os.environ["FUNBOOST_REDIS_URL"] == "redis://h:1/2"


def test_a_broken_config_file_is_reported_not_raised(project):
    (project / "funboost_config.py").write_text("raise RuntimeError('half-edited')\n")
    result, notices = _pick_up()
    assert "half-edited" in result.error and any("could not read" in n for n in notices)


def test_the_file_the_original_generated_imports_its_base_class(project):
    """The original's generated file starts with ``from funboost.utils.simple_data_class import
    DataClassBase``; that module exists here, so the file is read (it was ignored whole, with a warning)."""
    (project / "funboost_config.py").write_text(textwrap.dedent("""
        import logging
        from pathlib import Path
        from funboost.constant import BrokerEnum, ConcurrentModeEnum
        from funboost.core.func_params_model import FunctionResultStatusPersistanceConfig
        from funboost.utils.simple_data_class import DataClassBase

        class BrokerConnConfig(DataClassBase):
            REDIS_HOST = '127.0.0.1'
            REDIS_PORT = 6379
            REDIS_DB = 3

        class FunboostCommonConfig(DataClassBase):
            TIMEZONE = 'Asia/Shanghai'
    """))
    result, notices = _pick_up()
    assert result.error is None, result.error
    assert os.environ["FUNBOOST_REDIS_URL"] == "redis://127.0.0.1:6379/3"
    assert cfg.BrokerConnConfig.REDIS_DB == 3


def test_a_file_importing_a_module_not_installed_still_gives_its_plain_settings(project):
    """The original's template also imports nb_log (and older ones pytz): not installed with this project.
    The settings written as plain values are read from the source instead of the file being ignored."""
    (project / "funboost_config.py").write_text(textwrap.dedent("""
        from nb_log_not_installed_here import nb_log_config_default
        from funboost.utils.simple_data_class import DataClassBase

        class BrokerConnConfig(DataClassBase):
            REDIS_HOST = 'redis.internal'
            REDIS_PORT, REDIS_DB = 6380, 5
            REDIS_PASSWORD = nb_log_config_default.SOMETHING   # computed: not knowable, skipped
    """))
    result, notices = _pick_up()
    assert result.error is None, result.error
    assert os.environ["FUNBOOST_REDIS_URL"] == "redis://redis.internal:6380/5"
    assert any("nb_log_not_installed_here" in n and "plain values" in n for n in notices), notices
