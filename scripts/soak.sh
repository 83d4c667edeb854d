#!/usr/bin/env bash
# The soak at full size (issue 19, item 5): 1,000,000 tasks through the memory broker, 200,000 through
# sqlite and through redis_ack_able (the shared Redis on 6379, a queue of its own), each in a child process
# that publishes and consumes at once; RSS, open fds, threads and throughput sampled every second.
# Writes docs/figures/soak.png (the plot) and docs/figures/soak.json (the figures); exit status 1 when the
# leak check fails (RSS growth after warm-up >= 50 MB, or fds / threads not flat).
#   FUNBOOST_SOAK_SCALE=20 scripts/soak.sh     twenty times the tasks (about 30 minutes here: scale 1 takes 1.5)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
SCALE="${FUNBOOST_SOAK_SCALE:-1}"
exec "$PY" -m tests.reliability.soak \
  --kind memory --tasks $((1000000 * SCALE)) \
  --kind sqlite --tasks $((200000 * SCALE)) \
  --kind redis_ack_able --tasks $((200000 * SCALE)) \
  --png docs/figures/soak.png "$@"
