"""Eval metrics as pure functions: accuracy estimators over samples, and tool-use statistics over trajectories.

Estimators take per-problem sample counts and are vectorised with numpy:

    n = [32, 32]; c = [3, 0]          # samples drawn and samples correct, per problem
    avg_at_k(n, c)        -> mean_i c_i / n_i              (the paper's avg@k accuracy)
    pass_at_k(n, c, k)    -> mean_i 1 - C(n_i-c_i, k)/C(n_i, k)   (Chen et al. 2021, unbiased)
    maj_at_k(answers, correct)        majority vote per problem over extracted answers

Majority vote compares answers by NORMALISED STRING (`normalize_answer`: whitespace, $, \\left/\\right, \\dfrac,
trailing period, ... removed), not by mathematical equivalence: `0.5` and `\\frac{1}{2}` are different votes.
Responses without an extracted answer do not vote. Ties go to the answer whose first vote came earliest (lowest
sample index), so the result is deterministic. The winning group counts as correct when its earliest sample was
verified correct by the reward (all samples of a group normally agree, since they have the same answer).

Tool statistics (code ratio, error rates, tokens) come from `zerotir.metrics.trajectory_metrics`, the function the
training rows use too.

Why a response is wrong (`failure_kind`, `failure_shares`): every response falls in exactly one of FAILURE_KINDS,
judged from the response alone, the first that applies in this order:

    correct            the reward verified the answer
    tool_error         the last executed call did not finish 'ok' (error, timeout, oom, sandbox failure), whether
                       or not an answer followed
    no_answer          no extracted final answer (truncated, or never boxed)
    text_wrong         a wrong answer and no executed code
    answer_not_output  the answer is not what the last call printed (a copying slip, or reasoning after the code)
    wrong_code         the answer is what the last call printed, and that is wrong (the program computed the wrong
                       thing: wrong operands, wrong operation)

What this does not cover: `answer_not_output` compares normalised strings (`normalize_answer`) with the last
non-empty line of the output, so an answer that rewrites a right output in another form (0.5 → \frac{1}{2}) and is
then judged wrong lands there, not in `wrong_code`; a response whose code is right but whose *first* call failed and
whose last succeeded is judged by the last call only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from zerotir.types import Trajectory


# ------------------------------------------------------------------------------------------ accuracy estimators


def pass_at_k_single(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: 1 - C(n-c, k) / C(n, k), as the stable product 1 - prod_{i=n-c+1}^{n} (1 - k/i).

    The product form never forms the (astronomically large) binomials, so it is exact to float precision for any n.
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass@k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def pass_at_k_per_problem(n: Sequence[int] | np.ndarray, c: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """Unbiased pass@k per problem, vectorised. n, c: [P] samples drawn / correct → [P] float64; needs k <= min(n).

    Same stable product as `pass_at_k_single`, over a [P, max(n)] grid of factors (1 - k/i) that are 1 outside
    each problem's range n_i - c_i < i <= n_i.
    """
    n_arr, c_arr = np.asarray(n, dtype=np.int64), np.asarray(c, dtype=np.int64)
    if n_arr.shape != c_arr.shape or n_arr.ndim != 1:
        raise ValueError(f"pass@k: n and c must be 1-D of equal length, got {n_arr.shape} and {c_arr.shape}")
    if n_arr.size == 0:
        return np.zeros(0)
    if np.any(c_arr < 0) or np.any(c_arr > n_arr):
        raise ValueError("pass@k: need 0 <= c <= n for every problem")
    if k < 1 or k > n_arr.min():
        raise ValueError(f"pass@k: need 1 <= k <= min(n) = {n_arr.min()}, got k={k}")
    i = np.arange(1, n_arr.max() + 1, dtype=np.float64)[None, :]                  # [1, N]
    in_range = (i > (n_arr - c_arr)[:, None]) & (i <= n_arr[:, None])             # [P, N]
    factors = np.where(in_range, 1.0 - k / i, 1.0)
    return 1.0 - np.prod(factors, axis=1)


def pass_at_k(n: Sequence[int] | np.ndarray, c: Sequence[int] | np.ndarray, k: int) -> float:
    """Mean unbiased pass@k over problems. n, c: [P] samples drawn / correct per problem; needs k <= min(n)."""
    per = pass_at_k_per_problem(n, c, k)
    return float(per.mean()) if per.size else 0.0


def avg_at_k(n: Sequence[int] | np.ndarray, c: Sequence[int] | np.ndarray) -> float:
    """Mean over problems of the per-problem accuracy c_i / n_i (= pass@1). n, c: [P]."""
    n_arr, c_arr = np.asarray(n, dtype=np.float64), np.asarray(c, dtype=np.float64)
    if n_arr.size == 0:
        return 0.0
    if np.any(n_arr <= 0):
        raise ValueError("avg@k: every problem needs at least one sample")
    return float(np.mean(c_arr / n_arr))


def default_ks(n: int) -> list[int]:
    """The k reported for pass@k: powers of two below n, and n itself (1, 2, 4, ..., n)."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n] if n >= 1 else []


_LATEX_NOISE = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\:|\\ |\\displaystyle|\$")


def normalize_answer(answer: str | None) -> str | None:
    """Canonical string used for voting: drops spacing, $, \\left/\\right, \\text{} wrappers, a trailing period,
    and unifies \\dfrac/\\tfrac → \\frac. None or empty → None. (String identity, not math equivalence.)"""
    if answer is None:
        return None
    s = _LATEX_NOISE.sub("", answer)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\s+", "", s).rstrip(".")
    return s or None


def majority_vote(answers: Sequence[str | None], correct: Sequence[bool]) -> tuple[str | None, bool]:
    """(winning normalised answer, its correctness) for one problem's samples, in sample order.

    Ties go to the answer voted first; the winner's correctness is that of its earliest sample. No answers → (None,
    False)."""
    if len(answers) != len(correct):
        raise ValueError(f"majority_vote: {len(answers)} answers but {len(correct)} correctness flags")
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, a in enumerate(answers):
        key = normalize_answer(a)
        if key is None:
            continue
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, i)
    if not counts:
        return None, False
    # max count, then earliest first vote
    winner = min(counts, key=lambda a: (-counts[a], first[a]))
    return winner, bool(correct[first[winner]])


def maj_at_k(answers: Sequence[Sequence[str | None]], correct: Sequence[Sequence[bool]]) -> float:
    """Share of problems whose majority-vote answer is correct. answers/correct: per problem, per sample."""
    if len(answers) == 0:
        return 0.0
    return float(np.mean([majority_vote(a, c)[1] for a, c in zip(answers, correct)]))


# ------------------------------------------------------------------------------------------------ failure kinds

FAILURE_KINDS: tuple[str, ...] = ("correct", "tool_error", "no_answer", "text_wrong", "answer_not_output",
                                  "wrong_code")
"""Every response is exactly one of these (module docstring); their shares sum to 1."""


def failure_kind(t: "Trajectory") -> str:
    """The one FAILURE_KINDS entry that says why `t` (a scored trajectory) is right or wrong."""
    if t.correct:
        return "correct"
    executed = [c for c in t.tool_calls if c.executed]
    if executed and executed[-1].status != "ok":
        return "tool_error"
    if t.answer is None:
        return "no_answer"
    if not executed:
        return "text_wrong"
    last = executed[-1]
    lines = [ln for ln in last.output.splitlines() if ln.strip()]
    printed = normalize_answer(lines[-1]) if lines else None
    return "wrong_code" if printed is not None and printed == normalize_answer(t.answer) else "answer_not_output"


def failure_shares(trajs: Sequence["Trajectory"]) -> dict[str, float]:
    """{kind: share of `trajs`} over every FAILURE_KINDS entry (all 0.0 for no trajectories)."""
    counts = dict.fromkeys(FAILURE_KINDS, 0)
    for t in trajs:
        counts[failure_kind(t)] += 1
    return {k: (v / len(trajs) if trajs else 0.0) for k, v in counts.items()}
