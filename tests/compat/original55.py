"""Lists of the original funboost 55.0 public surface, read from the installed original (pip install
funboost==55.0; dir(funboost), BoosterParams.model_fields, BrokerEnum attributes)."""
ORIGINAL_55_EXPORTS = ['AbstractConsumer', 'AbstractPublisher', 'ActiveCousumerProcessInfoGetter', 'AioAsyncResult', 'ApsJobAdder',
 'AsyncResult', 'Booster', 'BoosterDiscovery', 'BoosterParams', 'BoosterParamsComplete', 'BoostersManager',
 'BrokerConnConfig', 'BrokerEnum', 'ConcurrentModeEnum', 'EmptyConsumer', 'EmptyPublisher',
 'ExceptionForPushToDlxqueue', 'ExceptionForRequeue', 'ExceptionForRetry', 'FunboostCommonConfig',
 'FunboostFileLoggerMixin', 'FunboostMetaTypeFileLogger', 'FunboostPool', 'FunboostPoolPickleFunc',
 'FunctionResultStatus', 'FunctionResultStatusPersistanceConfig', 'HasNotAsyncResult', 'MemoryFunboostPool',
 'PublisherParams', 'RedisMixin', 'RemoteTaskKiller', 'ResultFromMongo', 'TaskOptions', 'atexit', 'boost',
 'concurrent_pool', 'constant', 'consumers', 'core', 'ctrl_c_recv', 'enable_ctrl_c_quit_on_windows',
 'factories', 'fct', 'flogger', 'funboost_aps_scheduler', 'funboost_config_deafult', 'funboost_current_task',
 'get_consumer', 'get_current_taskid', 'get_funboost_file_logger', 'get_logger', 'get_publisher', 'nb_log',
 'nb_print', 'publishers', 'queues', 'register_broker_exclusive_config_default', 'register_custom_broker',
 'set_frame_config', 'show_current_threads_num', 'show_frame_config', 'timing_job', 'utils',
 'wait_for_possible_has_finish_all_tasks_by_conusmer_list']
ORIGINAL_55_FIELDS = ['queue_name', 'broker_kind', 'project_name', 'concurrent_mode', 'concurrent_num', 'specify_concurrent_pool',
 'specify_async_loop', 'is_auto_start_specify_async_loop_in_child_thread', 'qps',
 'is_using_distributed_frequency_control', 'is_send_consumer_heartbeat_to_redis', 'max_retry_times',
 'is_using_advanced_retry', 'advanced_retry_config', 'is_push_to_dlx_queue_when_retry_max_times',
 'consuming_function_decorator', 'function_timeout', 'is_support_remote_kill_task', 'log_level',
 'logger_prefix', 'create_logger_file', 'logger_name', 'log_filename', 'is_show_message_get_from_broker',
 'is_print_detail_exception', 'publish_msg_log_use_full_msg', 'msg_expire_seconds', 'do_task_filtering',
 'task_filtering_expire_seconds', 'function_result_status_persistance_conf',
 'user_custom_record_process_info_func', 'is_using_rpc_mode', 'rpc_result_expire_seconds', 'rpc_timeout',
 'delay_task_apscheduler_jobstores_kind', 'allow_run_time_cron', 'schedule_tasks_on_main_thread',
 'is_auto_start_consuming_message', 'booster_group', 'consuming_function', 'consuming_function_raw',
 'consuming_function_name', 'broker_exclusive_config', 'should_check_publish_func_params',
 'manual_func_input_params', 'consumer_override_cls', 'publisher_override_cls', 'consuming_function_kind',
 'user_options', 'auto_generate_info', 'is_fake_booster', 'booster_registry_name']
ORIGINAL_55_BROKER_ENUM_NAMES = ['CELERY', 'CONFLUENT_KAFKA', 'DRAMATIQ', 'EMPTY', 'FASTEST_MEM_QUEUE', 'GRPC', 'HTTP', 'HTTPSQS', 'HUEY',
 'KAFKA', 'KAFKA_CONFLUENT', 'KAFKA_CONFLUENT_SASlPlAIN', 'KOMBU', 'LMDB', 'LOCAL_PYTHON_QUEUE',
 'MEMORY_QUEUE', 'MONGOMQ', 'MQTT', 'MYSQL_CDC', 'NAMEKO', 'NATS_CORE', 'NATS_JETSTREAM', 'NSQ', 'PEEWEE',
 'PERSISTQUEUE', 'POSTGRES', 'PULSAR', 'RABBITMQ', 'RABBITMQ_AMQP', 'RABBITMQ_AMQPSTORM',
 'RABBITMQ_COMPLEX_ROUTING', 'RABBITMQ_PIKA', 'RABBITMQ_RABBITPY', 'REDIS', 'REDIS_ACK_ABLE',
 'REDIS_ACK_USING_TIMEOUT', 'REDIS_BRPOP_LPUSH', 'REDIS_PRIORITY', 'REDIS_PUBSUB', 'REDIS_STREAM',
 'REDIS_ZSET_DELAY', 'REDIS_ZSET_PRIORITY', 'REIDS_ACK_USING_TIMEOUT', 'ROCKETMQ', 'ROCKETMQ5', 'RQ',
 'SQLACHEMY', 'SQLITE_QUEUE', 'SQS', 'TCP', 'TXT_FILE', 'UDP', 'WATCHDOG', 'WEBSOCKET', 'ZEROMQ']

# Exports this project does not provide (the test fails if one appears, so this list stays honest): none.
NOT_PROVIDED_EXPORTS: set = set()
