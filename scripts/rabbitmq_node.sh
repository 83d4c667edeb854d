#!/usr/bin/env bash
# A second RabbitMQ node of its own, for restart and fault experiments (never the shared node on 5672):
# its own node name, AMQP port, distribution port, mnesia and log directories, config (127.0.0.1 only).
#
#   scripts/rabbitmq_node.sh start [DIR [PORT]]   start it (DIR default ~/.cache/funboost/rabbitmq-node), print the URL
#   scripts/rabbitmq_node.sh stop  [DIR]          stop it (SIGTERM, then SIGKILL of whatever is left)
#
# The tests start their nodes themselves (funboost.testing.servers.PrivateRabbitmq, same code).
set -euo pipefail
cd "$(dirname "$0")/.."
ACTION="${1:-start}"
DIR="${2:-${HOME}/.cache/funboost/rabbitmq-node}"
PY="${PYTHON:-python3}"
shift $(( $# > 2 ? 2 : $# ))
exec "${PY}" -m funboost.testing.servers rabbitmq "${ACTION}" "${DIR}" "$@"
