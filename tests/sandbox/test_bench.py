"""`zerotir sandbox bench`: the percentile and summary formulas by hand, the table, and a tiny real run."""

import pytest

from tests.sandbox.conftest import needs_full
from zerotir.sandbox.bench import format_table, percentile, run_bench, run_rollout_bench, summarize

pytestmark = pytest.mark.timeout(300)


def test_percentile_by_hand():
    xs = [4.0, 1.0, 3.0, 2.0]  # sorted: 1 2 3 4; position q * 3
    assert percentile(xs, 0.5) == 2.5  # between 2 and 3: the median
    assert percentile(xs, 0.9) == pytest.approx(3.7)  # position 2.7: 3 + 0.7
    assert percentile(xs, 0.99) == pytest.approx(3.97)
    assert percentile(xs, 0.0) == 1.0 and percentile(xs, 1.0) == 4.0
    assert percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_summarize_by_hand():
    d = summarize([0.001, 0.002, 0.003, 0.004, 0.010], wall_s=0.5, wrong=1)
    assert d["n"] == 5 and d["exec_per_s"] == 10.0 and d["wrong"] == 1
    assert d["p50_ms"] == pytest.approx(3.0)
    assert d["p90_ms"] == pytest.approx(7.6)  # position 3.6: 4 + 0.6 * (10 - 4)
    assert d["p99_ms"] == pytest.approx(9.76)


def test_format_table_rows_and_ratios():
    cell = {"p50_ms": 2.0, "p90_ms": 3.0, "p99_ms": 4.0, "exec_per_s": 500.0, "wrong": 0}
    fresh = {"p50_ms": 100.0, "p90_ms": 120.0, "p99_ms": 130.0, "exec_per_s": 10.0, "wrong": 0}
    out = {"isolation": "full", "workers": 2, "cpus": 2, "load_avg_1m": 0.5, "seconds": 12.0,
           "snippets": ["trivial"], "concurrencies": [1, 4],
           "trivial": {"by_concurrency": {1: {"sandbox": cell, "fresh": fresh}, 4: {"sandbox": cell, "fresh": fresh}}}}
    lines = format_table(out)
    rows = [x for x in lines if x.startswith("| trivial")]
    assert len(rows) == 2
    assert "| 2.0 / 3.0 / 4.0 | 500 | 100 / 120 / 130 | 10.0 | 50.0x | 50x | 0 |" in rows[0]
    assert "load average 0.50" in lines[0]


@needs_full
def test_tiny_real_run():
    logged = []
    out = run_bench(workers=1, n_latency=4, n_baseline=1, concurrencies=(1, 2), snippets=("trivial",),
                    log=logged.append)
    t = out["trivial"]
    assert set(t["by_concurrency"]) == {1, 2}
    assert t["by_concurrency"][2]["sandbox"]["n"] == 8 and t["by_concurrency"][2]["fresh"]["n"] == 2
    assert t["wrong_outputs"] == 0 and t["speedup_p50"] > 1
    assert any(line.startswith("| trivial | 2 |") for line in logged)
    with pytest.raises(ValueError, match="unknown snippets"):
        run_bench(snippets=("nope",))


@needs_full
def test_rollout_bench_tiny_real_run():
    logged = []
    out = run_rollout_bench(workers=1, sessions=6, reps=2, log=logged.append)
    assert out["default"]["preimport"] and out["lean"]["preimport"] == []
    assert len(out["default"]["walls_s"]) == len(out["lean"]["walls_s"]) == 2
    assert out["default"]["wrong"] == out["lean"]["wrong"] == 0
    assert out["speedup"] == pytest.approx(out["default"]["median_s"] / out["lean"]["median_s"])
    assert any(line.startswith("| nothing (preimport=[]) |") for line in logged)
    with pytest.raises(ValueError, match=">= 1"):
        run_rollout_bench(sessions=0)
