#!/usr/bin/env bash
# The reliability suite at its full size (N=5,000 per SIGKILL run, 1,000 malformed messages per broker,
# 10 MB payloads, 5,000 fuzz examples per property), through tox env `reliability`; CI runs the same tests
# at the small size. Figures (one JSON line per run) go to the file named by FUNBOOST_RELIABILITY_REPORT
# (default: reliability-report.jsonl here) and feed the tables of docs/reliability.md.
# Extra arguments go to pytest, e.g.  scripts/reliability.sh -k sigkill
set -euo pipefail
cd "$(dirname "$0")/.."
export FUNBOOST_RELIABILITY_SIZE=full
export FUNBOOST_RELIABILITY_REPORT="${FUNBOOST_RELIABILITY_REPORT:-$PWD/reliability-report.jsonl}"
: > "$FUNBOOST_RELIABILITY_REPORT"
bash scripts/test.sh -e reliability -- -s "$@"
echo "figures: $FUNBOOST_RELIABILITY_REPORT"
