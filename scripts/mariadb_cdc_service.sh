#!/usr/bin/env bash
# Start the MariaDB instance that funboost-mysql-cdc's tests and bench read the binlog of: its own
# datadir, its own loopback port (3307), ROW binlog with full row metadata. Idempotent. The machine's
# MariaDB on 3306 is never touched.
#
#   scripts/mariadb_cdc_service.sh          start if nothing listens on the port, wait until it accepts
#   scripts/mariadb_cdc_service.sh stop     stop the server this script started (pid file), wait for exit
#
# Env: FUNBOOST_MARIADB_CDC_PORT (3307), FUNBOOST_MARIADB_CDC_DIR (/tmp/funboost-mariadb-cdc).
set -euo pipefail

PORT="${FUNBOOST_MARIADB_CDC_PORT:-3307}"
BASE="${FUNBOOST_MARIADB_CDC_DIR:-/tmp/funboost-mariadb-cdc}"
DATADIR="${BASE}/data-${PORT}"
PIDFILE="${BASE}/mariadbd-${PORT}.pid"
SOCKET="${BASE}/mariadbd-${PORT}.sock"
LOG="${BASE}/mariadbd-${PORT}.log"
HOST=127.0.0.1

find_bin() {  # mariadbd lives in /usr/sbin on Debian, which a non-login PATH may lack
  command -v "$1" 2>/dev/null || { [[ -x "/usr/sbin/$1" ]] && echo "/usr/sbin/$1"; } || { [[ -x "/usr/bin/$1" ]] && echo "/usr/bin/$1"; }
}
MARIADBD="$(find_bin mariadbd || true)"
INSTALL_DB="$(find_bin mariadb-install-db || true)"
CLIENT="$(find_bin mariadb || find_bin mysql || true)"

port_open() {
  (exec 3<>"/dev/tcp/${HOST}/${PORT}") 2>/dev/null
}

if [[ "${1:-start}" == "stop" ]]; then
  if [[ -f "${PIDFILE}" ]]; then
    pid="$(cat "${PIDFILE}")"
    kill "${pid}" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.1; done
    echo "mariadb_cdc_service: stopped mariadbd (pid ${pid})"
  else
    echo "mariadb_cdc_service: no pid file, nothing to stop"
  fi
  exit 0
fi

if port_open; then
  echo "mariadb_cdc_service: something already listens on ${HOST}:${PORT}"
  exit 0
fi
if [[ -z "${MARIADBD}" || -z "${INSTALL_DB}" ]]; then
  echo "mariadb_cdc_service: mariadbd / mariadb-install-db not found (install the MariaDB server package)" >&2
  exit 1
fi

mkdir -p "${BASE}"
RUN_AS=()
if [[ "$(id -u)" == "0" ]]; then RUN_AS=(--user=root); fi

if [[ ! -d "${DATADIR}/mysql" ]]; then
  rm -rf "${DATADIR}"
  "${INSTALL_DB}" --no-defaults --datadir="${DATADIR}" "${RUN_AS[@]}" --auth-root-authentication-method=normal \
    --skip-test-db >"${BASE}/install-${PORT}.log" 2>&1
fi

# --no-defaults: nothing from /etc/mysql (the machine's server config) leaks into this instance
nohup "${MARIADBD}" --no-defaults "${RUN_AS[@]}" --datadir="${DATADIR}" --port="${PORT}" --bind-address="${HOST}" \
  --socket="${SOCKET}" --pid-file="${PIDFILE}" --log-error="${LOG}" \
  --server-id=1 --log-bin=mysql-bin --binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL \
  --max-binlog-size=64M --skip-name-resolve --innodb-buffer-pool-size=64M --innodb-log-file-size=64M \
  --max-allowed-packet=64M >/dev/null 2>&1 &

for _ in $(seq 1 600); do
  if port_open; then
    # the root account of a fresh datadir: passwordless over TCP from loopback (test instance only)
    if [[ -n "${CLIENT}" ]]; then
      "${CLIENT}" --no-defaults -S "${SOCKET}" -uroot -e \
        "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" \
        >/dev/null 2>&1 || true
    fi
    echo "mariadb_cdc_service: mariadbd listening on ${HOST}:${PORT} (datadir ${DATADIR})"
    exit 0
  fi
  sleep 0.1
done
echo "mariadb_cdc_service: mariadbd did not start within 60 s; see ${LOG}" >&2
tail -n 30 "${LOG}" >&2 || true
exit 1
