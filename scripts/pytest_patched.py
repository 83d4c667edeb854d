"""Run pytest in a gevent- or eventlet-monkey-patched interpreter (patching must come first)."""
import sys

mode = sys.argv[1]
if mode == "gevent":
    from gevent import monkey

    monkey.patch_all()
elif mode == "eventlet":
    import eventlet

    eventlet.monkey_patch()
else:
    raise SystemExit(f"unknown mode {mode!r}")

import pytest  # noqa: E402

raise SystemExit(pytest.main(sys.argv[2:]))
