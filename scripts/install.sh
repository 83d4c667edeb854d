#!/usr/bin/env bash
# Install funboost from this checkout into the current Python environment (or the one of $PYTHON):
#   bash scripts/install.sh                 core + the default sqlite broker (the "funboost" distribution)
#   bash scripts/install.sh redis kafka     plus broker plugins, by their extra / folder name
#   bash scripts/install.sh all             every plugin
# PyPI's "funboost" is the original funboost (55.x), a different project: this installs the distributions
# of this checkout by path, in one pip call, so that pip takes funboost-core etc. from here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
paths=(./core ./plugins/funboost-sqlite)
extras=()
py_minor=$("$PY" -c 'import sys; print(sys.version_info[1])')
for name in "$@"; do
  if [ "$name" = all ]; then
    for d in plugins/funboost-*/; do
      d="${d%/}"
      [ "$d" = plugins/funboost-rq ] && [ "$py_minor" -lt 10 ] && continue  # rq 3 needs Python 3.10+
      [ "$d" = plugins/funboost-sqlite ] || paths+=("./$d")
    done
    extras+=(all)
    continue
  fi
  d="plugins/funboost-${name//_/-}"
  if [ ! -f "$d/pyproject.toml" ]; then
    echo "install.sh: there is no plugin distribution $d (see plugins/)" >&2
    exit 2
  fi
  [ "$d" = plugins/funboost-sqlite ] || paths+=("./$d")
  extras+=("$name")
done
meta=./packaging/funboost
if [ "${#extras[@]}" -gt 0 ]; then
  meta="$meta[$(IFS=,; echo "${extras[*]}")]"
fi
exec "$PY" -m pip install "${paths[@]}" "$meta"
