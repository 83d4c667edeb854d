#!/usr/bin/env bash
# Start (idempotently) a 3-master Redis Cluster on 127.0.0.1:${FUNBOOST_REDIS_CLUSTER_PORT:-7101}..+2 for the
# funboost-redis cluster smoke test. Data lives in a temp dir. Stop with: scripts/redis_cluster.sh stop
# A cluster left half made (nodes SIGKILLed, a stale nodes.conf, an interrupted `--cluster create`) is torn
# down and made again from empty nodes: a restarted node that remembers an old cluster refuses
# `--cluster create` ("Node ... is not empty") and may stay in cluster_state:fail.
set -euo pipefail
BASE=${FUNBOOST_REDIS_CLUSTER_PORT:-7101}
DIR=${FUNBOOST_REDIS_CLUSTER_DIR:-/tmp/funboost-redis-cluster}
PORTS=("$BASE" "$((BASE + 1))" "$((BASE + 2))")

ours() {  # is the server on port $1 one of this script's cluster nodes?
  [[ "$(redis-cli -p "$1" config get dir 2>/dev/null | tail -n 1)" == "$DIR/$1" ]]
}
wait_for() {  # wait_for SECONDS COMMAND...: poll COMMAND every 0.1 s until it succeeds or the time is up
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || return 1
    sleep 0.1
  done
}
stop_nodes() {
  for p in "${PORTS[@]}"; do
    if ours "$p"; then
      redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
      wait_for 10 bash -c "! redis-cli -p $p ping" || { echo "node on $p did not stop" >&2; exit 1; }
    fi
  done
  rm -rf "$DIR"
}
cluster_ok() {  # every node answers and the first one sees the cluster whole
  for p in "${PORTS[@]}"; do redis-cli -p "$p" ping >/dev/null 2>&1 || return 1; done
  redis-cli -p "$BASE" cluster info 2>/dev/null | grep -q "cluster_state:ok"
}

if [[ "${1:-start}" == "stop" ]]; then stop_nodes; exit 0; fi
if cluster_ok; then echo "cluster already up on $BASE"; exit 0; fi

stop_nodes  # whatever is left of an earlier cluster: start from empty nodes
for p in "${PORTS[@]}"; do
  if redis-cli -p "$p" ping >/dev/null 2>&1; then
    echo "port $p is taken by a Redis server this script did not start; choose FUNBOOST_REDIS_CLUSTER_PORT" >&2
    exit 1
  fi
done
for p in "${PORTS[@]}"; do
  mkdir -p "$DIR/$p"
  redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file "$DIR/$p/nodes.conf" --dir "$DIR/$p" --save "" --appendonly no --daemonize yes \
    --logfile "$DIR/$p/log"
done
for p in "${PORTS[@]}"; do
  wait_for 20 redis-cli -p "$p" ping || { echo "node on $p did not start; $DIR/$p/log:" >&2; cat "$DIR/$p/log" >&2; exit 1; }
done
redis-cli --cluster create "${PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >/dev/null
wait_for 60 cluster_ok && { echo "cluster up on $BASE"; exit 0; }
echo "cluster did not become ready:" >&2; redis-cli -p "$BASE" cluster info >&2 || true; exit 1
