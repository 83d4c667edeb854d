#!/usr/bin/env bash
# The reliability suite at its full size (N=5,000 per SIGKILL run, 1,000 malformed messages per broker,
# 10 MB payloads, 5,000 fuzz examples per property), through tox env `reliability`; CI runs the same tests
# at the small size. Figures (one JSON line per run) go to the file named by FUNBOOST_RELIABILITY_REPORT
# (default: reliability-report.jsonl here) and feed the tables of docs/reliability.md.
# Extra arguments go to pytest, e.g.  scripts/reliability.sh -k sigkill
# usage: scripts/reliability.sh [-h|--help] [pytest arguments ...]   (-h / --help: this text, nothing run)
set -euo pipefail
# -h / --help before anything else: the setup below empties the figures file, runs tox, starts services
for arg in "$@"; do
    case "$arg" in
        -h|--help)
            awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
            exit 0 ;;
    esac
done
cd "$(dirname "$0")/.."
export FUNBOOST_RELIABILITY_SIZE=full
export FUNBOOST_RELIABILITY_REPORT="${FUNBOOST_RELIABILITY_REPORT:-$PWD/reliability-report.jsonl}"
: > "$FUNBOOST_RELIABILITY_REPORT"
bash scripts/test.sh -e reliability -- -s "$@"
echo "figures: $FUNBOOST_RELIABILITY_REPORT"
