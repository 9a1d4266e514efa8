"""Eval estimators and tool statistics against hand-computed values and naive loops."""

import itertools
import math
import random

import numpy as np
import pytest

from zerotir.eval import metrics as M
from zerotir.metrics import trajectory_metrics


# ------------------------------------------------------------------------------------------------ pass@k


@pytest.mark.parametrize("n,c,k,expected", [
    (5, 1, 1, 0.2),                 # 1 - C(4,1)/C(5,1) = 1 - 4/5
    (5, 1, 2, 0.4),                 # 1 - C(4,2)/C(5,2) = 1 - 6/10
    (5, 2, 2, 0.7),                 # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (4, 2, 2, 5 / 6),               # 1 - C(2,2)/C(4,2) = 1 - 1/6
    (10, 3, 5, 11 / 12),            # 1 - C(7,5)/C(10,5) = 1 - 21/252
    (5, 0, 3, 0.0),                 # nothing correct
    (5, 3, 3, 1.0),                 # n - c = 2 < k = 3: every 3-subset has a correct one
    (32, 32, 32, 1.0),
])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert M.pass_at_k_single(n, c, k) == pytest.approx(expected, abs=1e-12)
    assert M.pass_at_k([n], [c], k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_mean_over_problems():
    # (0.4 + 0 + 1) / 3, problems with different sample counts
    assert M.pass_at_k([5, 5, 10], [1, 0, 10], 2) == pytest.approx(1.4 / 3)


def _naive_pass_at_k(n, c, k):
    """Enumerate every k-subset of n samples (c of them correct) and count those with a correct one."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_subset_enumeration():
    rng = random.Random(0)
    for _ in range(60):
        n = rng.randint(1, 9)
        c = rng.randint(0, n)
        k = rng.randint(1, n)
        assert M.pass_at_k_single(n, c, k) == pytest.approx(_naive_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_vectorised_matches_exact_binomials():
    rng = np.random.default_rng(1)
    n = rng.integers(1, 200, size=50)
    c = np.array([rng.integers(0, ni + 1) for ni in n])
    k = int(n.min())
    per = M.pass_at_k_per_problem(n, c, k)
    for ni, ci, p in zip(n, c, per):
        exact = 1 - math.comb(int(ni - ci), k) / math.comb(int(ni), k)
        assert p == pytest.approx(exact, abs=1e-9)


def test_pass_at_k_stable_for_large_n():
    # C(1000, 500) overflows float; the product form stays exact: 1 - C(999,500)/C(1000,500) = 1 - 500/1000
    assert M.pass_at_k_single(1000, 1, 500) == pytest.approx(0.5, abs=1e-12)
    assert 0.0 <= M.pass_at_k_single(1000, 10, 500) <= 1.0


def test_pass_at_k_bad_input():
    with pytest.raises(ValueError):
        M.pass_at_k([4], [5], 1)
    with pytest.raises(ValueError):
        M.pass_at_k([4, 2], [1, 1], 3)  # k > min(n)


def test_avg_at_k_and_default_ks():
    assert M.avg_at_k([4, 4, 2], [1, 4, 0]) == pytest.approx((0.25 + 1 + 0) / 3)
    assert M.avg_at_k([5], [2]) == pytest.approx(M.pass_at_k([5], [2], 1))
    assert M.default_ks(1) == [1]
    assert M.default_ks(8) == [1, 2, 4, 8]
    assert M.default_ks(12) == [1, 2, 4, 8, 12]


# ----------------------------------------------------------------------------------------------- maj@k


def test_normalize_answer():
    assert M.normalize_answer(" \\dfrac{1}{2} ") == "\\frac{1}{2}"
    assert M.normalize_answer("$\\left( 3, \\frac{\\pi}{2} \\right)$") == "(3,\\frac{\\pi}{2})"
    assert M.normalize_answer("42.") == "42"
    assert M.normalize_answer("\\text{Evelyn}") == "Evelyn"
    assert M.normalize_answer("") is None and M.normalize_answer(None) is None
    assert M.normalize_answer("0.5") != M.normalize_answer("\\frac12")  # strings, not math equivalence


def test_majority_vote_hand_computed():
    # 3 votes for 7 (one written with spaces), 2 for 5, one missing answer
    answers = ["5", "7", None, " 7", "5", "7."]
    correct = [False, True, False, True, False, True]
    assert M.majority_vote(answers, correct) == ("7", True)
    # tie 2-2: the answer voted first (sample 0: '5') wins
    assert M.majority_vote(["5", "7", "7", "5"], [False, True, True, False]) == ("5", False)
    assert M.majority_vote(["7", "5", "5", "7"], [True, False, False, True]) == ("7", True)
    assert M.majority_vote([None, None], [False, False]) == (None, False)


def test_maj_at_k_against_naive_loop():
    rng = random.Random(3)
    answers, correct = [], []
    for _ in range(40):
        a = [rng.choice(["1", "2", "3", None]) for _ in range(rng.randint(1, 7))]
        answers.append(a)
        correct.append([x == "2" for x in a])
    naive = 0
    for a, _c in zip(answers, correct):
        counts = {}
        for x in a:
            if x is not None:
                counts[x] = counts.get(x, 0) + 1
        if counts:
            best = max(counts.values())
            winner = next(x for x in a if x is not None and counts[x] == best)  # first-voted among the tied
            naive += winner == "2"
    assert M.maj_at_k(answers, correct) == pytest.approx(naive / 40)


# ------------------------------------------------------------------------------------------ tool metrics


def test_tool_stats_hand_computed(make_traj):
    trajs = [
        make_traj(sampled=10),                                                   # no code
        make_traj(sampled=4, tool_blocks=(3,), statuses=("ok",)),                # 1 call, 4+1 sampled, 3 tool
        make_traj(sampled=2, tool_blocks=(2, 4), statuses=("error", "timeout"), skipped=1, finish="length"),
        make_traj(sampled=6, skipped=2),                                         # code written, never run
    ]
    s = trajectory_metrics(trajs)  # the one metrics module (eval logs these under eval/)
    assert s["code_ratio"] == pytest.approx(2 / 4)
    assert s["tool_calls_per_response"] == pytest.approx(3 / 4)            # skipped calls do not count
    assert s["tool_error_rate"] == pytest.approx(1 / 3)
    assert s["tool_timeout_rate"] == pytest.approx(1 / 3)
    assert s["response_tokens"] == pytest.approx((10 + 5 + 4 + 6) / 4)
    assert s["tool_tokens"] == pytest.approx((0 + 3 + 6 + 0) / 4)
    assert s["truncation_rate"] == pytest.approx(1 / 4)
    assert trajectory_metrics([]) == {k: 0.0 for k in s}
