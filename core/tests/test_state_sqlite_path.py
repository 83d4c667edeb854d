"""An explicit sqlite state path in a folder that does not exist yet works (the folder is created)."""
from funboost.state.sqlite import SqliteStateBackend


def test_explicit_path_in_missing_folder(tmp_path, monkeypatch):
    path = tmp_path / "not" / "yet" / "state.sqlite3"
    monkeypatch.setenv("FUNBOOST_STATE_SQLITE_PATH", str(path))
    backend = SqliteStateBackend()
    backend.set_flag("q", "pause", "1")
    assert backend.get_flags("q")["pause"] == "1"
    assert path.exists()
