"""Console lines coloured by level on a terminal only (and never with NO_COLOR), with a clickable
path:line; the size-rotating file log shared by several writer processes loses and duplicates nothing."""
import io
import logging
import os
import pty
import re
import subprocess
import sys
import textwrap

from funboost.logs import ColourStreamHandler, ConsoleFormatter, ProcessSafeRotatingFileHandler


def _record(level=logging.WARNING, msg="hello"):
    rec = logging.LogRecord("funboost.q", level, os.path.abspath(__file__), 42, msg, None, None)
    rec.task_id = "-"
    return rec


def _handler(stream):
    h = ColourStreamHandler(stream)
    h.setFormatter(ConsoleFormatter())
    return h


def test_colour_on_a_terminal_only_and_never_with_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TERM", raising=False)
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            text = _handler(tty).format(_record(logging.ERROR))
            assert text.startswith("\033[31m") and text.endswith("\033[0m"), repr(text)
            assert _handler(tty).format(_record(logging.WARNING)).startswith("\033[33m")
            monkeypatch.setenv("NO_COLOR", "1")
            assert "\033" not in _handler(tty).format(_record(logging.ERROR))
    finally:
        os.close(master)
        os.close(slave)
    monkeypatch.delenv("NO_COLOR")
    plain = _handler(io.StringIO()).format(_record(logging.ERROR))
    assert "\033" not in plain


def test_console_lines_name_the_logging_code_as_path_and_line():
    text = _handler(io.StringIO()).format(_record())
    here = os.path.relpath(__file__) if not os.path.relpath(__file__).startswith("..") else __file__
    assert f" {here}:42 " in text, text


WRITER = textwrap.dedent("""
    import logging, sys
    from funboost.logs import ProcessSafeRotatingFileHandler
    path, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    h = ProcessSafeRotatingFileHandler(path, maxBytes=20000, backupCount=500, encoding="utf-8")
    h.setFormatter(logging.Formatter("%(message)s"))
    lg = logging.getLogger("w"); lg.addHandler(h); lg.setLevel(logging.INFO); lg.propagate = False
    for i in range(n):
        lg.info("%s-%05d %s", who, i, "x" * 80)
    h.close()
""")


def test_several_processes_share_one_rotating_file_without_losing_a_line(tmp_path):
    path = tmp_path / "shared.log"
    writers, per = 4, 1500
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"p{k}", str(per)]) for k in range(writers)]
    assert all(p.wait(120) == 0 for p in procs)
    files = sorted(tmp_path.glob("shared.log*"))
    files = [f for f in files if not f.name.endswith(".lock")]
    lines = [ln for f in files for ln in f.read_text(encoding="utf-8").splitlines()]
    assert all(re.fullmatch(r"p\d-\d{5} x{80}", ln) for ln in lines), [ln for ln in lines if not re.fullmatch(r"p\d-\d{5} x{80}", ln)][:3]
    ids = [ln.split(" ")[0] for ln in lines]
    expected = {f"p{k}-{i:05d}" for k in range(writers) for i in range(per)}
    assert len(ids) == len(expected) and set(ids) == expected  # every line once: none lost, none doubled
    assert len(files) > 10  # it did rotate, many times, with the writers racing
    assert all(f.stat().st_size <= 20000 for f in files)
