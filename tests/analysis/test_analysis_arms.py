import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from zerotir.analysis.arms import arm_name, arms_table, half_gain_x, render_markdown, welch_diff
from zerotir.analysis.report import mean_ci
from zerotir.analysis.runs import Run
from zerotir.cli import app


def test_arm_names_drop_the_seed():
    assert arm_name("filter=roc,seed=1") == "filter=roc"
    assert arm_name("async=true,lag=4,objective=decoupled,seed=2") == "async=true,lag=4,objective=decoupled"
    assert arm_name("seed=0") == "baseline"
    assert arm_name("my-run") == "my-run"


def test_half_gain_hand_checked():
    # final = mean(0.6, 0.6) = 0.6, target 0.3: between x=10 (0.2) and x=20 (0.6) at 10 + 10·0.1/0.4 = 12.5
    assert half_gain_x(np.array([0, 10, 20, 30.0]), np.array([0, 0.2, 0.6, 0.6])) == pytest.approx(12.5)
    # final = mean(0.3, 0.5) = 0.4, target 0.1 + 0.15 = 0.25: between 0 (0.1) and 5 (0.3) at 5·0.15/0.2 = 3.75
    assert half_gain_x(np.array([0, 5, 9.0]), np.array([0.1, 0.3, 0.5])) == pytest.approx(3.75)
    # target met exactly at a point: final 0.6, target 0.3 = y at x = 5
    assert half_gain_x(np.array([0, 5, 9, 12.0]), np.array([0, 0.3, 0.6, 0.6])) == pytest.approx(5.0)
    # no gain, or falling: nothing to halve
    assert half_gain_x(np.array([0, 1, 2.0]), np.array([0.5, 0.5, 0.5])) is None
    assert half_gain_x(np.array([0, 1, 2.0]), np.array([0.5, 0.3, 0.2])) is None
    assert half_gain_x(np.array([0.0]), np.array([0.2])) is None


def test_half_gain_matches_a_naive_scan():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 12))
        x = np.cumsum(rng.uniform(0.5, 2, n))
        y = rng.uniform(0, 1, n)
        got = half_gain_x(x, y)
        final = (y[-1] + y[-2]) / 2
        target = y[0] + (final - y[0]) / 2
        if final <= y[0]:
            assert got is None
            continue
        # naive: walk a fine grid of the piecewise-linear curve and take the first grid point at or above target
        xs = np.linspace(x[0], x[-1], 200001)
        ys = np.interp(xs, x, y)
        naive = xs[np.argmax(ys >= target - 1e-12)]
        assert got == pytest.approx(naive, abs=(x[-1] - x[0]) * 2e-5)


def test_mean_ci_and_welch_against_hand_values():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    # sd 1, se 1/sqrt(3), t(0.975, 2) = 4.3027
    assert m == 2.0 and hi - m == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5) and m - lo == pytest.approx(hi - m)
    assert mean_ci([0.4]) == (0.4, None, None)
    w = welch_diff([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    # va = 1/3, vb = 4/3, se = sqrt(5/3); df = (5/3)^2 / ((1/9)/2 + (16/9)/2) = 2.9412
    from scipy import stats

    se, df = math.sqrt(5 / 3), (5 / 3) ** 2 / ((1 / 9) / 2 + (16 / 9) / 2)
    assert w["diff"] == 2.0
    assert w["hi"] - 2.0 == pytest.approx(stats.t.ppf(0.975, df) * se)
    assert w["p"] == pytest.approx(stats.ttest_ind([2.0, 4.0, 6.0], [1.0, 2.0, 3.0], equal_var=False).pvalue)
    # no spread on either side: the difference is exact (interval = point); no p-value is given
    assert welch_diff([0.5, 0.5], [0.7, 0.7]) == {"diff": pytest.approx(0.2), "lo": pytest.approx(0.2),
                                                   "hi": pytest.approx(0.2), "p": None}


def _run(name: str, acc: list[float], flops_per_step: float = 10.0, secs_per_step: float = 2.0) -> Run:
    steps = [0.0, 4.0, 8.0, 12.0]
    series = {"eval/accuracy": dict(zip(steps, acc)), "eval/code_ratio": dict(zip(steps, [0.0, 0.5, 0.8, 0.9])),
              "compute/flops": {s: s * flops_per_step for s in steps},
              "compute/seconds": {s: s * secs_per_step for s in steps}}
    return Run(path=None, name=name, series=series)  # type: ignore[arg-type]


def test_arms_table_separates_a_real_difference_from_noise():
    runs = [_run(f"seed={i}", [0.0, 0.2 + d, 0.4 + d, 0.4 + d]) for i, d in enumerate([0.0, 0.02, -0.02])]
    runs += [_run(f"filter=roc,seed={i}", [0.0, 0.5 + d, 0.8 + d, 0.8 + d], flops_per_step=20.0, secs_per_step=3.0)
             for i, d in enumerate([0.0, 0.01, -0.01])]
    runs += [_run(f"filter=void,seed={i}", [0.0, 0.2 + d, 0.4 + d, 0.4 + d]) for i, d in enumerate([0.05, -0.04, 0.0])]
    t = arms_table(runs)
    names = [a["name"] for a in t["arms"]]
    assert names == ["baseline", "filter=roc", "filter=void"]
    base, roc, void = t["arms"]
    assert base["final_accuracy"]["mean"] == pytest.approx(0.4)  # each seed: mean of its last two evals
    assert roc["vs_baseline"]["final_accuracy"]["verdict"] == "differs"
    assert roc["vs_baseline"]["final_accuracy"]["diff"] == pytest.approx(0.8 - 0.4)
    assert void["vs_baseline"]["final_accuracy"]["verdict"] == "within noise"
    assert roc["seconds_per_step"]["mean"] == pytest.approx(3.0)
    # common budget: every run ends at 120 FLOPs except roc's (2x per step: 240); roc read at 120 = its last eval
    assert t["common_flops_budget"] == pytest.approx(120.0)
    assert roc["seeds"][0]["accuracy_at_budget"] == pytest.approx(0.65)  # halfway between 0.5 (at 80) and 0.8 (at 160)
    # baseline seed 0: evals 0, .2, .4, .4 at FLOPs 0, 40, 80, 120 → target .2 reached at 40
    assert base["seeds"][0]["half_gain_flops"] == pytest.approx(40.0)
    md = render_markdown(t)
    assert "| filter=roc | 3 |" in md and "**0.4 [" in md
    with pytest.raises(ValueError, match="baseline arm 'nope' not among the arms: baseline, filter=roc"):
        arms_table(runs, baseline="nope")


def test_extra_metrics_get_a_final_column():
    """A metric outside the fixed columns (an extra eval set's accuracy) gets `final <metric>`: per seed the mean of
    its last two evals, compared with the baseline like the rest; the fixed metrics are not repeated."""
    runs = []
    for arm, ood in (("seed", [0.0, 0.0, 0.1, 0.1]), ("curriculum=varied,seed", [0.0, 0.2, 0.5, 0.6])):
        for i, d in enumerate([0.0, 0.02, -0.02]):
            r = _run(f"{arm}={i}", [0.0, 0.3, 0.6, 0.6])
            r.series["eval/ood-wording/accuracy"] = dict(zip([0.0, 4.0, 8.0, 12.0], [v + d for v in ood]))
            runs.append(r)
    t = arms_table(runs, extra=("eval/ood-wording/accuracy", "eval/accuracy"))
    assert [c[0] for c in t["columns"]][-1] == "final:eval/ood-wording/accuracy"
    assert sum(c[0].startswith("final:") for c in t["columns"]) == 1      # eval/accuracy is final_accuracy already
    base, varied = t["arms"]
    assert base["seeds"][1]["final:eval/ood-wording/accuracy"] == pytest.approx(0.12)   # mean(0.12, 0.12)
    assert varied["final:eval/ood-wording/accuracy"]["mean"] == pytest.approx(0.55)     # mean(0.5, 0.6), seeds ±d
    v = varied["vs_baseline"]["final:eval/ood-wording/accuracy"]
    assert v["diff"] == pytest.approx(0.45) and v["verdict"] == "differs"
    assert varied["vs_baseline"]["final_accuracy"]["verdict"] == "within noise"
    assert "final eval/ood-wording/accuracy" in render_markdown(t)


def test_analyze_arms_cli_on_run_dirs(tmp_path):
    from analysis_synth import write_run

    for seed in range(3):
        write_run(tmp_path / "runs" / f"seed={seed}", seed, max_tool_calls=2, steps=12, eval_every=4, base_row=True)
        write_run(tmp_path / "runs" / f"tools=0,seed={seed}", seed, max_tool_calls=0, steps=12, eval_every=4,
                  base_row=True)
    res = CliRunner().invoke(app, ["analyze", str(tmp_path / "runs"), "--arms", "baseline", "-o",
                                   str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "| tools=0 | 3 |" in res.output
    table = json.loads((tmp_path / "out" / "arms.json").read_text())
    assert [a["name"] for a in table["arms"]] == ["baseline", "tools=0"]
    assert (tmp_path / "out" / "arms_eval_accuracy.png").stat().st_size > 1000
    bad = CliRunner().invoke(app, ["analyze", str(tmp_path / "runs"), "--arms", "nope", "-o", str(tmp_path / "o2")])
    assert bad.exit_code != 0 and "baseline arm 'nope'" in bad.output
