import numpy as np
import pytest

from zerotir.analysis.correlations import align, correlate, correlation_table, first_differences


def _naive_pearson(u, v):
    mu, mv = sum(u) / len(u), sum(v) / len(v)
    cov = sum((a - mu) * (b - mv) for a, b in zip(u, v))
    su = sum((a - mu) ** 2 for a in u) ** 0.5
    sv = sum((b - mv) ** 2 for b in v) ** 0.5
    return cov / (su * sv)


def test_hand_computed_and_naive_pearson():
    res = correlate([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert res["raw"]["pearson"] == pytest.approx(1.0)
    assert res["raw"]["spearman"] == pytest.approx(1.0)
    # differences of two straight lines are constant: undefined, said so
    assert res["detrended"]["pearson"] is None and "constant" in res["detrended"]["note"]
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=30), rng.normal(size=30)
    res = correlate(u, v)
    assert res["raw"]["pearson"] == pytest.approx(_naive_pearson(u, v))
    assert res["detrended"]["pearson"] == pytest.approx(_naive_pearson(np.diff(u), np.diff(v)))
    assert first_differences([1, 4, 9]).tolist() == [3, 5]


def test_independent_random_walks_detrended_near_zero_raw_not():
    """Spurious correlation: independent random walks correlate strongly in levels, not in their steps."""
    rng = np.random.default_rng(42)
    raw, det, det_sig = [], [], 0
    for _ in range(20):
        a = np.cumsum(rng.normal(size=300))
        b = np.cumsum(rng.normal(size=300))
        res = correlate(a, b)
        raw.append(abs(res["raw"]["pearson"]))
        det.append(abs(res["detrended"]["pearson"]))
        det_sig += res["detrended"]["pearson_p"] < 0.05
    assert np.median(raw) > 0.3
    assert np.median(det) < 0.1
    assert det_sig <= 4  # about 5% false positives expected among 20 pairs


def test_dependent_steps_survive_detrending():
    rng = np.random.default_rng(1)
    steps = rng.normal(size=200)
    a = np.cumsum(steps)
    b = np.cumsum(steps + 0.3 * rng.normal(size=200))
    res = correlate(a, b)
    assert res["detrended"]["spearman"] > 0.8 and res["detrended"]["spearman_p"] < 1e-6


def test_alignment_and_table():
    s = {"m1": {1.0: 1.0, 2.0: 2.0, 3.0: 3.0, 4.0: 5.0, 5.0: 4.0},
         "m2": {2.0: 10.0, 3.0: 30.0, 4.0: 20.0, 5.0: 40.0, 6.0: 0.0},
         "flat": {1.0: 1.0, 2.0: 1.0, 3.0: 1.0, 4.0: 1.0}}
    steps, a, b = align(s["m1"], s["m2"])
    assert steps.tolist() == [2, 3, 4, 5] and a.tolist() == [2, 3, 5, 4] and b.tolist() == [10, 30, 20, 40]
    rows = correlation_table(s, ["m1", "m2", "flat", "absent"])
    assert [(r["a"], r["b"]) for r in rows] == [("m1", "m2"), ("m1", "flat"), ("m2", "flat")]
    assert rows[0]["n"] == 4
    assert rows[1]["raw"]["spearman"] is None and "constant" in rows[1]["raw"]["note"]
    assert rows[2]["n"] == 3 and "only 3" in rows[2]["note"]


def test_short_and_nan_inputs():
    res = correlate([1.0, np.nan], [2.0, 3.0])
    assert res["n"] == 1 and res["raw"]["pearson"] is None and res["note"]
