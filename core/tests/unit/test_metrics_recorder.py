"""MetricsRecorder with an injected clock: runs recorded in the last seconds of a minute, after the last
flush, reach that minute's row (a sample in the next minute dropped them: a minute lost its last runs)."""
from funboost.engine.metrics import MetricsRecorder


def test_runs_of_a_minute_s_last_seconds_are_written_after_the_minute_ends():
    from funboost.timeseries import N_HIST
    counters = [0, 0, 0.0, [0] * N_HIST]
    rec = MetricsRecorder("q", "src", lambda: (counters[0], counters[1], counters[2], list(counters[3])))
    minute = 1_800_000_000 - 1_800_000_000 % 60

    def runs(n, at):
        counters[0] += n
        rec.sample(now=at)

    runs(5, minute + 10)
    written = rec.rows(None, now=minute + 11)  # a flush in the minute
    runs(40, minute + 58)  # after the flush, before the minute ends
    runs(1, minute + 61)  # the next sample is in the next minute
    written += rec.rows(None, now=minute + 62)
    by_bucket: dict = {}
    for r in written:
        if r.res == "m":
            by_bucket[r.bucket] = r.data.get("r", 0)  # a later row of a bucket replaces the earlier one
    assert by_bucket == {minute: 45, minute + 60: 1}, by_bucket
