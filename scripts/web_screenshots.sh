#!/usr/bin/env bash
# Regenerate the web manager's screenshots in docs/web/ (referenced from docs/web.md): runs the browser
# test (plugins/funboost-web/tests/test_browser.py) with FUNBOOST_WEB_SCREENSHOTS set. Needs Debian's
# chromium (apt-get install chromium) and a venv with funboost-web[test]; PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
mkdir -p docs/web
FUNBOOST_WEB_SCREENSHOTS="$PWD/docs/web" "$PY" -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning \
    plugins/funboost-web/tests/test_browser.py
ls -1 docs/web/*.png
