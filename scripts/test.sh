#!/usr/bin/env bash
# The whole test suite: one tox environment per distribution (see tox.ini). Installs tox into
# .venv-tox on first use; services the machine does not run (the Kafka-wire test broker) are started
# by the tox environments that need them. Extra arguments go to tox, e.g.  scripts/test.sh -e core
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
# the py39..py313 environments need every installed Python: with pyenv, put each version's bin folder at
# the end of PATH (after the shims, so that python3 stays what it was)
if command -v pyenv >/dev/null 2>&1; then
  for v in $(pyenv versions --bare 2>/dev/null); do
    PATH="$PATH:$(pyenv root)/versions/$v/bin"
  done
  export PATH
fi
if [ ! -x .venv-tox/bin/tox ]; then
  "$PY" -m venv .venv-tox
  .venv-tox/bin/python -m pip install -q --upgrade pip
  .venv-tox/bin/python -m pip install -q "tox>=4.11"
fi
if [ "$#" -eq 0 ]; then
  # the whole suite: environments run four at a time (most tests wait on servers, not on the CPU);
  # a failing environment's output is printed in full at the end
  exec .venv-tox/bin/tox run-parallel --parallel "${FUNBOOST_TOX_PARALLEL:-4}" --parallel-no-spinner
fi
exec .venv-tox/bin/tox "$@"
