#!/usr/bin/env bash
# Start (idempotently) a 3-master Redis Cluster on 127.0.0.1:${FUNBOOST_REDIS_CLUSTER_PORT:-7101}..+2 for the
# funboost-redis cluster smoke test. Data lives in a temp dir. Stop with: scripts/redis_cluster.sh stop
set -euo pipefail
BASE=${FUNBOOST_REDIS_CLUSTER_PORT:-7101}
DIR=${FUNBOOST_REDIS_CLUSTER_DIR:-/tmp/funboost-redis-cluster}
PORTS=("$BASE" "$((BASE + 1))" "$((BASE + 2))")
if [[ "${1:-start}" == "stop" ]]; then
  for p in "${PORTS[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
  rm -rf "$DIR"; exit 0
fi
if redis-cli -p "$BASE" cluster info 2>/dev/null | grep -q "cluster_state:ok"; then
  echo "cluster already up on $BASE"; exit 0
fi
mkdir -p "$DIR"
for p in "${PORTS[@]}"; do
  mkdir -p "$DIR/$p"
  redis-cli -p "$p" ping >/dev/null 2>&1 || redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file "$DIR/$p/nodes.conf" --dir "$DIR/$p" --save "" --appendonly no --daemonize yes \
    --logfile "$DIR/$p/log"
done
for p in "${PORTS[@]}"; do
  for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create "${PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >/dev/null
for _ in $(seq 100); do
  redis-cli -p "$BASE" cluster info | grep -q "cluster_state:ok" && { echo "cluster up on $BASE"; exit 0; }
  sleep 0.1
done
echo "cluster did not become ready" >&2; exit 1
