import math

import numpy as np
import pytest

from zerotir.analysis.fits import (LAWS, clean_xy, ema, fit_law, fit_series, kfold_rmse, predict, rolling_mean,
                                   split_index)

TRUE = {
    "power": {"a": 0.5, "b": 0.3},
    "saturating": {"c": 0.9, "a": 0.8, "b": 0.6},
    "loglinear": {"a": 0.1, "b": 0.15},
}


def test_law_formulas_hand_computed():
    assert predict("power", {"a": 2.0, "b": 0.5}, np.array([4.0]))[0] == pytest.approx(4.0)
    assert predict("saturating", {"c": 1.0, "a": 0.5, "b": 1.0}, np.array([2.0]))[0] == pytest.approx(0.75)
    assert predict("loglinear", {"a": 1.0, "b": 2.0}, np.array([math.e]))[0] == pytest.approx(3.0)
    # array form follows param_names order
    assert predict("saturating", [1.0, 0.5, 1.0], np.array([4.0]))[0] == pytest.approx(0.875)


@pytest.mark.parametrize("law", list(LAWS))
def test_fit_law_recovers_noiseless_parameters(law):
    x = np.arange(1, 61, dtype=float)
    y = predict(law, TRUE[law], x)
    p = fit_law(x, y, law)
    assert p is not None
    for name, v in zip(LAWS[law].param_names, p):
        assert v == pytest.approx(TRUE[law][name], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("law", list(LAWS))
def test_noisy_series_recovers_parameters_within_ci_and_chooses_the_true_law(law):
    rng = np.random.default_rng(7)
    x = np.arange(1, 101, dtype=float)
    y = predict(law, TRUE[law], x) + rng.normal(0, 0.02, len(x))
    res = fit_series(x, y, n_boot=60, seed=0)
    lf = res.fits[law]
    assert lf.ok and lf.boot_ok >= 50
    for name, true in TRUE[law].items():
        lo, hi = lf.ci[name]
        assert lo <= true <= hi, (law, name, true, lo, hi)
        assert lo <= lf.params[name] <= hi
    assert res.best == law
    assert lf.r2 > 0.9
    # held-out and extrapolation errors are at the noise level for the true law
    assert lf.cv_rmse < 0.03 and lf.extrap_rmse < 0.04
    assert lf.cv_rmse < res.baseline_cv_rmse


def test_ci_coverage_is_roughly_nominal():
    """Across independent noise draws, the 95% CI of the saturating exponent covers the truth most of the time."""
    x = np.arange(1, 61, dtype=float)
    covered = 0
    for s in range(10):
        y = predict("saturating", TRUE["saturating"], x) + np.random.default_rng(100 + s).normal(0, 0.03, len(x))
        lf = fit_series(x, y, laws=("saturating",), n_boot=40, seed=s).fits["saturating"]
        lo, hi = lf.ci["b"]
        covered += lo <= 0.6 <= hi
    assert covered >= 7


def test_extrapolation_check_uses_first_70_percent_of_steps():
    x = np.arange(1, 11, dtype=float)
    assert split_index(x, 0.7) == 7  # cut at 1 + 0.7·9 = 7.3 → steps 1..7
    y = predict("saturating", TRUE["saturating"], np.arange(1, 41, dtype=float))
    res = fit_series(np.arange(1, 41), y, n_boot=0)
    assert res.split_step == 28
    assert res.fits["saturating"].extrap_rmse < 1e-6
    assert res.fits["saturating"].extrap_params["b"] == pytest.approx(0.6, rel=1e-4)
    # the wrong laws extrapolate a saturating curve worse than the right one
    assert res.fits["loglinear"].extrap_rmse > 10 * res.fits["saturating"].extrap_rmse


def test_smoothing_hand_computed_and_against_naive_loop():
    assert rolling_mean(np.array([1, 2, 3, 4, 5.0]), 3) == pytest.approx([1.5, 2, 3, 4, 4.5])
    assert ema(np.array([1.0, 0.0, 0.0]), 0.5) == pytest.approx([1.0, 0.5, 0.25])
    y = np.random.default_rng(0).normal(size=23)
    for w in (1, 2, 4, 5):
        half = w // 2
        naive = [np.mean(y[max(0, i - half): i + (w - half)]) for i in range(len(y))]
        assert rolling_mean(y, w) == pytest.approx(naive)


def test_kfold_constant_model_and_clean_xy():
    x = np.arange(1, 11, dtype=float)
    assert kfold_rmse(x, np.full(10, 3.0), None) == 0.0
    cx, cy, note = clean_xy([3, 0, 1, 2, np.nan], [30, 0, 10, 20, 5])
    assert cx.tolist() == [1, 2, 3] and cy.tolist() == [10, 20, 30]
    assert "non-finite" in note and "x ≤ 0" in note


def test_edge_cases_give_notes_not_crashes():
    const = fit_series(np.arange(1, 30), np.full(29, 0.5), n_boot=10)
    assert const.best is None and not const.fits and "constant" in const.note
    two = fit_series([1, 2], [0.1, 0.2], n_boot=10)
    assert two.best is None and "only 2" in two.note
    empty = fit_series([], [], n_boot=10)
    assert empty.n == 0 and "only 0" in empty.note
    noise = fit_series(np.arange(1, 80), np.random.default_rng(3).normal(0.5, 0.1, 79), n_boot=10)
    assert noise.best is None and "constant mean" in noise.note
    nan = fit_series([1, 2, 3, 4, 5, 6], [np.nan] * 6, n_boot=10)
    assert nan.best is None and "non-finite" in nan.note
    d = noise.to_dict()  # JSON-safe (NaN → None)
    assert all(v is None or isinstance(v, (int, float, str, list, dict)) for v in d.values())
