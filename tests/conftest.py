import os
import tempfile

os.environ.setdefault("FUNBOOST_DATA_DIR", tempfile.mkdtemp(prefix="funboost-e2e-"))
os.environ.setdefault("FUNBOOST_LOG_TO_CONSOLE", "0")
