"""ActiveCousumerProcessInfoGetter keeps the original's method and key names and works in a process that
defines no booster (a monitoring script reading heartbeats from the shared state backend)."""
from __future__ import annotations

from funboost import ActiveCousumerProcessInfoGetter
from funboost.state.base import get_state_backend


def test_getter_reads_heartbeats_without_a_local_booster(tmp_path):
    be = get_state_backend("sqlite", str(tmp_path / "state.sqlite3"))
    be.heartbeat("c1", "getter_q1", {"consumer_id": "c1", "queue": "getter_q1", "host": "h1", "ip": "10.0.0.1",
                                     "pid": 11, "last_seen": 1.0, "started": 0.5}, 60)
    be.heartbeat("c2", "getter_q2", {"consumer_id": "c2", "queue": "getter_q2", "host": "h2", "ip": "10.0.0.2",
                                     "pid": 22, "last_seen": 1.0, "started": 0.5}, 60)
    g = ActiveCousumerProcessInfoGetter(be)
    [one] = g.get_all_hearbeat_info_by_queue_name("getter_q1")
    assert (one["process_id"], one["computer_ip"], one["computer_name"], one["queue_name"]) == (11, "10.0.0.1", "h1", "getter_q1")
    assert sorted(g.get_all_hearbeat_info_partition_by_queue_name()) == ["getter_q1", "getter_q2"]
    assert g.get_all_ips() == ["10.0.0.1", "10.0.0.2"]
    assert [i["pid"] for i in g.get_all_hearbeat_info_by_ip("10.0.0.2")] == [22]
    assert sorted(g.get_all_hearbeat_info_partition_by_ip()) == ["10.0.0.1", "10.0.0.2"]
