"""An explicit sqlite state path in a folder that does not exist yet works (the folder is created)."""
from funboost.state.sqlite import SqliteStateBackend


def test_explicit_path_in_missing_folder(tmp_path, monkeypatch):
    path = tmp_path / "not" / "yet" / "state.sqlite3"
    monkeypatch.setenv("FUNBOOST_STATE_SQLITE_PATH", str(path))
    backend = SqliteStateBackend()
    backend.set_flag("q", "pause", "1")
    assert backend.get_flags("q")["pause"] == "1"
    assert path.exists()



def test_two_processes_upgrade_an_older_store_at_once(tmp_path):
    """CI run at a6229cd: two processes of multi_process_consume opened a store together, both saw the
    ``fails`` column missing and the second ALTER failed with "duplicate column name". Here two openers of
    a store without the column are held behind another connection's write lock, so both have read the old
    layout before either can change it; both must succeed."""
    import sqlite3
    import threading
    import time

    from funboost.state import sqlite as sqlite_state

    path = str(tmp_path / "old.sqlite3")
    old_schema = sqlite_state._SCHEMA.replace(", fails INTEGER", "")
    assert old_schema != sqlite_state._SCHEMA
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.executescript(old_schema)
    holder.execute("BEGIN IMMEDIATE")  # WAL: the openers can read the layout, not write
    errors: list = []

    def open_store() -> None:
        try:
            SqliteStateBackend(path)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    openers = [threading.Thread(target=open_store) for _ in range(2)]
    for t in openers:
        t.start()
    time.sleep(1.0)  # lets both reach the write lock; a shorter wait only weakens the test, never fails it
    holder.execute("COMMIT")
    for t in openers:
        t.join(timeout=60)
    assert errors == []
    cols = {row[1] for row in holder.execute("PRAGMA table_info(status_batches)")}
    assert "fails" in cols


def test_store_from_an_older_version_gets_the_new_columns(tmp_path):
    import sqlite3
    path = str(tmp_path / "old.sqlite3")
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE status_batches (id INTEGER PRIMARY KEY, tbl TEXT NOT NULL, t_min REAL, "
                  "t_max REAL, expire_at REAL NOT NULL, data TEXT NOT NULL)")
    SqliteStateBackend(path)
    with sqlite3.connect(path) as c:
        cols = {row[1] for row in c.execute("PRAGMA table_info(status_batches)")}
    assert {"ids", "fails"} <= cols
