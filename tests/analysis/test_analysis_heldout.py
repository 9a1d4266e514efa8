import math

import numpy as np
import pytest
from analysis_synth import sigmoid_runs, true_sigmoid

from zerotir.analysis import heldout, sizes
from zerotir.analysis import sigmoid as sg


def test_rmse_and_power_nc_hand_computed():
    assert heldout.rmse([1.0, 2.0], [1.0, 4.0]) == pytest.approx(math.sqrt(2.0))
    assert math.isnan(heldout.rmse([], []))
    assert math.isnan(heldout.rmse([np.inf], [1.0]))
    n = np.repeat([1e5, 1e6], 5)
    c = np.tile(np.geomspace(1e9, 1e12, 5), 2)
    p = heldout.power_nc(n, c, 0.5 * n ** 0.1 * c ** 0.05)
    assert p == pytest.approx({"a": 0.5, "b": 0.1, "g": 0.05}, rel=1e-6)
    assert heldout.power_nc([1.0], [1.0], [1.0]) is None


def test_compute_extrapolation_splits_at_half_the_compute_and_baselines_are_exact():
    # a hand-made group: two runs, compute 0..10; the fit part is C ≤ 5
    c = np.arange(0.0, 11.0)
    runs = [(c, sg.sigmoid(c, 0.0, 1.0, 4.0, 2.0)), (c, sg.sigmoid(c, 0.0, 1.0, 4.0, 2.0) + 0.01)]
    e = heldout.compute_extrapolation(runs)
    assert e["cut"] == 5.0 and e["n_fit"] == 12 and e["n_test"] == 10
    y_test = np.concatenate([r[1][6:] for r in runs])
    y_fit = np.concatenate([r[1][:6] for r in runs])
    last = np.mean([runs[0][1][5], runs[1][1][5]])  # each run's last fitted point, averaged
    assert e["errors"]["persistence"] == pytest.approx(heldout.rmse(np.full(10, last), y_test))
    assert e["errors"]["mean"] == pytest.approx(heldout.rmse(np.full(10, y_fit.mean()), y_test))
    # the true law, noise-free but for the 0.01 offset of one run, beats every baseline
    assert e["errors"]["sigmoid"] < 0.01 and e["winner"] == "sigmoid"
    assert e["power_law"]["law"] in ("power", "saturating", "loglinear")


def test_compute_extrapolation_on_noisy_seeds_beats_the_baselines():
    truth = true_sigmoid(1e6)
    e = heldout.compute_extrapolation(sigmoid_runs(truth, np.random.default_rng(0), n_runs=4, span=4.0),
                                      a_bounds=(0, 1))
    errs = e["errors"]
    assert errs["sigmoid"] < min(errs["persistence"], errs["mean"], errs["power_law"])


def test_compute_extrapolation_short_series_is_a_note():
    e = heldout.compute_extrapolation([(np.array([0.0, 1.0, 2.0]), np.array([0.1, 0.2, 0.3]))])
    assert e["errors"] == {} and "too few points" in e["note"]
    assert heldout.compute_extrapolation([])["note"] == "no finite points"


def _family(rng, ns=(1e5, 3e5, 1e6, 3e6, 1e7), n_boot=40):
    out = []
    for n in ns:
        runs = sigmoid_runs(true_sigmoid(n), rng, n_runs=4, sd=0.01)
        out.append((n, runs, sg.fit_runs(runs, n_boot=n_boot, seed=0, a_bounds=(0, 1))))
    return out


def test_size_extrapolation_predicts_the_largest_size_before_seeing_it():
    fam = _family(np.random.default_rng(1))
    t = heldout.size_extrapolation(fam, a_bounds=(0, 1))
    truth = true_sigmoid(1e7)
    assert t["held_out_N"] == 1e7 and t["train_N"] == [1e5, 3e5, 1e6, 3e6]
    assert t["cross"]["a_law"] == "saturating"  # 4 training sizes: A_inf − k·(N/N0)^−alpha
    pr = t["predicted"]
    assert pr["params"]["A"] == pytest.approx(truth["A"], abs=0.05)
    assert pr["params"]["C_mid"] == pytest.approx(truth["C_mid"], rel=0.15)
    assert pr["C"][0] == 0.0 and pr["R"][0] == pytest.approx(pr["params"]["R0"])
    assert all(lo <= r <= hi for lo, r, hi in zip(pr["R_lo"], pr["R"], pr["R_hi"]))
    errs = t["errors"]
    assert set(errs) == {"sigmoid", "persistence", "mean", "power_law"}
    assert errs["sigmoid"] < min(errs["persistence"], errs["mean"], errs["power_law"])
    assert t["C_mid_ratio"] == pytest.approx(1.0, abs=0.2) and abs(t["A_error"]) < 0.05
    # the prediction did not use the largest size: same numbers without it
    blind = heldout.size_extrapolation(fam[:4] + [(1e7, [(np.array([0.0, 1e13]), np.array([0.0, 0.0]))],
                                                     fam[0][2])], a_bounds=(0, 1))
    assert blind["predicted"]["params"] == pytest.approx(pr["params"])
    three = heldout.size_extrapolation(fam[2:])
    assert three["cross"]["a_law"] == "loglinear" and "a + b·ln N" in three["cross"]["note"]
    two = heldout.size_extrapolation(fam[:2])
    assert two["errors"] == {} and "needs ≥ 3" in two["note"]


def test_cross_size_law_hand_computed():
    # exact per-size parameters from a known law → recovered exactly (A by the 2-parameter law with 3 sizes)
    ns = [1e5, 1e6, 1e7]
    params = [{"R0": 0.1 + 0.01 * math.log(n / 1e6), "A": 0.5 + 0.05 * math.log(n / 1e6),
               "C_mid": 2e11 * (n / 1e6) ** 0.8, "B": b} for n, b in zip(ns, (1.0, 2.0, 4.0))]
    law, p = sizes.fit_cross(ns, params)
    assert law == "loglinear" and p["N0"] == 1e6
    assert p == pytest.approx({"a": 0.5, "b": 0.05, "c": 2e11, "gamma": 0.8, "r": 0.1, "s": 0.01, "B": 2.0,
                               "N0": 1e6}, rel=1e-9)
    at = sizes.law_at(law, p, 1e8, a_bounds=(0, 1))
    assert at == pytest.approx({"R0": 0.1 + 0.01 * math.log(100), "A": 0.5 + 0.05 * math.log(100),
                                "C_mid": 2e11 * 100 ** 0.8, "B": 2.0})
    assert sizes.law_at(law, p, 1e30, a_bounds=(0, 1))["A"] == 1.0  # a rate's ceiling is clipped to [0, 1]
    assert "C_mid = 2e+11·(N/1e+06)^0.8" in sizes.formula(law, p)
    assert sizes.fit_cross([1e6, 1e6], params[:2]) is None
