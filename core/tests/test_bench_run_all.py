"""bench/run_all.py and bench/scale_bench.py: the pure parts (result parsing, aggregation over rounds, the
markdown table, rewriting the marked region of docs/benchmarks.md) on made-up figures. No benchmark runs
here and nothing is timed."""
from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

import pytest

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench")
pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(BENCH, "run_all.py")),
                                reason="bench/ is not next to core/ (installed package)")


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", os.path.join(BENCH, f"{name}.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ra() -> ModuleType:
    return _load("run_all")


def test_parse_output_reads_every_tag_and_ignores_colour(ra) -> None:
    out = "\n".join([
        "noise",
        "\x1b[0;32m2026-12-04 orig_part.py:12 \x1b[0mBENCHRESULT {\"publish\": 10.5, \"rss_mb\": 70}\x1b[0m",
        "RESULT {\"rate\": 3.0, \"rss\": 40.5}",
        "RESULT2 {\"rate\": 4.0}",
        "FIGURES {\"rate\": 5.0, \"first\": 0.1} trailing",
        "CALLRSS {\"rss_mb\": 33.0}",
    ])
    parsed = ra.parse_output(out)
    assert parsed["BENCHRESULT"] == {"publish": 10.5, "rss_mb": 70}
    assert parsed["RESULT"]["rate"] == 3.0 and parsed["RESULT2"]["rate"] == 4.0
    assert parsed["FIGURES"]["first"] == 0.1
    assert ra.pick(parsed, "RESULT.rate") == (3.0, 40.5)  # the script's own RSS wins
    assert ra.pick(parsed, "FIGURES.rate") == (5.0, 33.0)  # else the process that ran the part
    assert ra.pick(parsed, "FIGURES.rate", own_rss=False) == (5.0, None)
    assert ra.pick(parsed, "RESULT.missing") == (None, 40.5)


def test_aggregate_takes_medians_and_per_round_ratios(ra) -> None:
    rows = [ra.Row("push", "ours:publish", "orig:publish", "original push", target=1.5),
            ra.Row("consume", "ours:consume", "orig:consume", "original consume")]
    samples = {
        "ours:publish": [(100.0, 50.0), (300.0, 55.0), (200.0, 52.0)],
        "orig:publish": [(100.0, 70.0), (100.0, 71.0), (50.0, 69.0)],
        "ours:consume": [(10.0, 50.0), None, (30.0, None)],  # a failed round and a part without RSS
        "orig:consume": [(5.0, 70.0), (5.0, 70.0), None],
    }
    push, consume = ra.aggregate("redis", rows, samples)
    assert push.ours.median == 200.0 and push.ours.n == 3
    assert push.ours.spread_pct == pytest.approx(50.0)  # (300 - 100) / 2 / 200
    assert push.ours.rss == 55.0 and push.anchor.rss == 71.0
    assert push.ratio == 3.0 and (push.ratio_lo, push.ratio_hi) == (1.0, 4.0)  # rounds: 1, 3, 4
    assert push.verdict == "met"
    assert consume.ratio == 2.0 and consume.ratio_lo == consume.ratio_hi == 2.0  # only round 1 has both
    assert consume.verdict == ""  # no target
    skipped = ra.aggregate("kafka", rows, {}, skipped="no Kafka")
    assert all(r.skipped == "no Kafka" and r.ratio is None for r in skipped)
    assert ra.RowResult("s", "x", "y", ra.stat([]), ra.stat([]), None, None, None, 2.0).verdict == "not measured"


def test_markdown_table_and_terminal_table(ra) -> None:
    rows = [ra.Row("push", "ours:publish", "orig:publish", "original push", target=1.5)]
    res = ra.aggregate("redis", rows, {"ours:publish": [(1000.0, 40.0), (1200.0, 41.0)],
                                       "orig:publish": [(1000.0, 60.0), (1000.0, 61.0)]})
    res += ra.aggregate("kafka", rows, {}, skipped="no Kafka at 127.0.0.1:19092")
    md = ra.format_markdown(res, {"command": "python bench/run_all.py --quick", "date": "2026-01-01 00:00 UTC",
                                  "rounds": 2, "n": 3000, "machine": "2 cpu"})
    lines = md.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("| suite"))
    assert lines[header + 1].startswith("|---")
    assert lines[header + 2] == ("| redis | push | 1,100 ±9 % | 41 | original push | 1,000 ±0 % | 61 | "
                                 "1.10× (1.00–1.20) | ≥ 1.5×: NOT met |")
    assert "skipped: no Kafka at 127.0.0.1:19092" in lines[header + 3]
    assert "python bench/run_all.py --quick" in md and "2 alternating rounds" in md
    term = ra.format_terminal(res)
    assert "1.10× (1.00–1.20)" in term and len(term.splitlines()) == 3


def test_replace_region_keeps_everything_outside_the_markers(ra) -> None:
    doc = f"# Benchmarks\n\nintro\n\n{ra.BEGIN}\nold table\n{ra.END}\n\n## later section\n"
    new = ra.replace_region(doc, "| new | table |")
    assert new == f"# Benchmarks\n\nintro\n\n{ra.BEGIN}\n| new | table |\n{ra.END}\n\n## later section\n"
    assert ra.replace_region(new, "| new | table |") == new  # idempotent
    appended = ra.replace_region("# Benchmarks\n", "t", "<!-- a -->", "<!-- b -->")
    assert appended == "# Benchmarks\n\n<!-- a -->\nt\n<!-- b -->\n"


def test_the_docs_carry_both_marked_regions(ra) -> None:
    with open(ra.DOC) as fh:
        text = fh.read()
    sb = _load("scale_bench")
    for begin, end in ((ra.BEGIN, ra.END), (sb.BEGIN, sb.END)):
        assert text.count(begin) == 1 and text.count(end) == 1 and text.index(begin) < text.index(end)
    assert "/work/venvs" not in text  # interpreters of one machine: run_all.py builds its own


def test_scale_markdown_on_made_up_figures() -> None:
    sb = _load("scale_bench")
    out = {"meta": {"date": "d", "machine": "m", "quick": True, "probe": 10, "consume_n": 20, "proc_n": 100,
                    "proc_rounds": 2, "backlog_rounds": 1, "held": 5, "pushes": 50},
           "backlog": [{"kind": "sqlite", "backlog": b, "fill_rate": 1000.0, "queue_size_ms": 0.5 * b / 1000,
                        "push_us": 40.0, "fetch_ack_us": 6.0, "consume_rate": 2e4, "round": 0} for b in (1000, 100000)],
           "procs": [{"kind": "redis_ack_able", "procs": p, "round": r, "rate": 1000.0 * p * (1 - 0.1 * r),
                      "cpu_us_per_msg": 30.0, "redis_cpu_us_per_msg": 5.0} for r in (0, 1) for p in (1, 2)],
           "memory_held": [{"kind": "sqlite", "mode": "threads", "held": 5, "rss_before_mb": 40.0,
                            "rss_held_mb": 41.0, "kb_per_task": 204.8, "seconds_to_fill": 0.1}],
           "memory_publisher": [{"kind": "sqlite", "pushes": 50, "push_rate": 100.0, "rss_before_mb": 40.0,
                                 "rss_after_mb": 40.0}]}
    md = sb.format_markdown(out, ["sqlite"], [1000, 100000], {"kafka": "no Kafka"})
    assert "| sqlite | 100,000 | 1,000 | 50.00 | 40.0 | 6.0 | 20,000 |" in md
    assert "| redis_ack_able | 950 ±5 % | 1,900 ±5 % | 2.00× (2.00, 2.00): met |" in md
    assert "| sqlite | publisher after 50 pushes | 40 | 40 | 0.0 bytes | 100 push/s |" in md
    assert "Skipped: kafka (no Kafka)." in md


def test_latency_rows_are_ceilings_and_absolute_targets_need_no_anchor(ra) -> None:
    rows = [ra.Row("p50", "tcp:p50", "raw:p50", "raw p50", target=1.2, unit="ms", lower_is_better=True),
            ra.Row("push", "tcp:push", "", "", abs_target=50000.0)]
    samples = {"tcp:p50": [(0.11, None), (0.13, None)], "raw:p50": [(0.1, None), (0.1, None)],
               "tcp:push": [(60000.0, None), (40000.0, None), (70000.0, None)]}
    p50, push = ra.aggregate("transports", rows, samples)
    assert p50.ratio == pytest.approx(1.2) and p50.verdict == "met"  # median of 1.1 and 1.3
    assert ra.fmt_target(p50) == "≤ 1.2×: met"
    assert ra.fmt_value(p50.ours, "ms") == "0.12 ms ±8 %"
    assert push.ratio is None and push.ours.median == 60000.0 and push.verdict == "met"
    assert ra.fmt_target(push) == "≥ 50,000 msg/s: met"
    slower = ra.aggregate("transports", rows[:1], {"tcp:p50": [(0.2, None)], "raw:p50": [(0.1, None)]})[0]
    assert slower.verdict == "NOT met"
    line = [ln for ln in ra.format_markdown([p50, push], {}).splitlines() if "| push |" in ln][0]
    assert line == "| transports | push | 60,000 ±25 % | – | – | – | – | – | ≥ 50,000 msg/s: met |"
