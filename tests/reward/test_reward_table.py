"""Table-driven reward test: (response, gold, expected correct) through the real scorer (extraction + math-verify).

All rows are scored in ONE `score` call (a module fixture), then checked row by row so a failure names its row.
"""

from __future__ import annotations

import pytest

from zerotir.config import RewardConfig
from zerotir.metrics import trajectory_metrics, training_names
from zerotir.reward import RewardScorer
from zerotir.types import Trajectory

B = "The answer is $\\boxed{%s}$."

TABLE: list[tuple[str, str, str, bool]] = [
    # id, response, gold, expected
    # ---- fractions
    ("frac-same", B % "\\frac{1}{2}", "\\frac{1}{2}", True),
    ("frac-vs-decimal", B % "0.5", "\\frac{1}{2}", True),
    ("dfrac", B % "\\dfrac{3}{4}", "\\frac34", True),
    ("slash-frac", B % "3/4", "\\frac{3}{4}", True),
    ("frac-unreduced", B % "\\frac{2}{4}", "\\frac{1}{2}", True),
    ("neg-frac", B % "-\\frac{1}{2}", "\\frac{-1}{2}", True),
    ("frac-wrong", B % "\\frac{1}{3}", "\\frac{1}{2}", False),
    ("nested-frac", B % "\\frac{\\frac{1}{2}}{2}", "\\frac14", True),
    # ---- decimals / integers
    ("int", B % "42", "42", True),
    ("int-wrong", B % "41", "42", False),
    ("decimal-trailing-zero", B % "2.50", "2.5", True),
    ("thousands-sep", B % "1,000", "1000", True),
    ("repeating-decimal-close", B % "0.3333333", "\\frac{1}{3}", True),
    ("rounded-decimal-too-coarse", B % "0.333", "\\frac{1}{3}", False),
    # ---- LaTeX expressions
    ("sqrt", B % "\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}", True),
    ("sqrt-power", B % "2^{1/2}", "\\sqrt{2}", True),
    ("pi", B % "2\\pi", "2\\pi", True),
    ("expanded-poly", B % "x^2+2x+1", "(x+1)^2", True),
    ("poly-wrong", B % "x^2+1", "(x+1)^2", False),
    ("equation-rhs", B % "x=5", "5", True),
    ("degrees", B % "90^\\circ", "90", True),
    ("text-wrapper", B % "\\text{Monday}", "Monday", True),
    ("left-right", B % "\\left(\\frac{1}{2}\\right)", "\\frac12", True),
    # ---- intervals
    ("interval", B % "(1, 2]", "(1,2]", True),
    ("interval-open-vs-closed", B % "(1, 2)", "(1,2]", False),
    ("interval-infinity", B % "[0, \\infty)", "[0,\\infty)", True),
    ("interval-union", B % "(-\\infty,0)\\cup(1,\\infty)", "(-\\infty, 0) \\cup (1, \\infty)", True),
    # ---- sets / tuples / matrices
    ("set-order", B % "\\{3,2,1\\}", "\\{1,2,3\\}", True),
    ("set-wrong", B % "\\{1,2\\}", "\\{1,2,3\\}", False),
    ("tuple", B % "(1, -2)", "(1,-2)", True),
    ("matrix", B % "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True),
    # ---- units / percentages / currency
    ("units-stripped", B % "10 \\text{ cm}", "10", True),
    ("units-both", B % "10\\text{cm}", "10 \\text{ cm}", True),
    ("unit-conversion-not-covered", B % "100 \\text{ cm}", "1 \\text{ m}", False),
    ("percent-vs-number", B % "50\\%", "50", True),
    ("percent-vs-fraction", B % "50\\%", "0.5", True),
    ("dollars", B % "\\$5", "5", True),
    # ---- multiple choice
    ("choice-letter", B % "\\text{(B)}", "B", True),
    ("choice-wrong-letter", B % "C", "B", False),
    # ---- extraction: missing / multiple / truncated / nested
    ("no-box", "The answer is 42.", "42", False),
    ("empty-box", "So \\boxed{}.", "42", False),
    ("two-boxes-last-wins", "First \\boxed{41}, corrected: \\boxed{42}", "42", True),
    ("two-boxes-last-wrong", "First \\boxed{42}, then \\boxed{41}", "42", False),
    ("truncated-box", "So the answer is \\boxed{\\frac{1}{2", "\\frac12", False),
    ("truncated-after-box", "Earlier \\boxed{7} then the response was cut mid-sen", "7", True),
    ("fbox", "Result: \\fbox{12}", "12", True),
    ("boxed-no-braces", "Hence \\boxed 5.", "5", True),
    ("box-in-code-output", "```output\n3\n```\nTherefore $\\boxed{3}$", "3", True),
    ("empty-gold", B % "3", "", False),
]


@pytest.fixture(scope="module")
def scored(verifier):
    trajs = [Trajectory(problem_id=rid, prompt_ids=[1], response_ids=[2, 3], loss_mask=[1, 1], logprobs=[0.0, 0.0],
                        response_text=resp, gold_answer=gold) for rid, resp, gold, _ in TABLE]
    with RewardScorer(RewardConfig(), verifier=verifier) as scorer:
        summary = scorer.score(trajs, max_total_tokens=100)
    metrics = {**training_names(trajectory_metrics(trajs)), "reward/verify_timeouts": float(summary.verify_timeouts)}
    return {t.problem_id: t for t in trajs}, metrics


def test_table_size():
    assert len(TABLE) >= 40 and len({r[0] for r in TABLE}) == len(TABLE)


@pytest.mark.parametrize("rid,response,gold,expected", TABLE, ids=[r[0] for r in TABLE])
def test_row(scored, rid, response, gold, expected):
    t = scored[0][rid]
    assert t.correct is expected, f"{rid}: answer {t.answer!r} vs gold {gold!r}"
    assert t.reward == (1.0 if expected else 0.0)            # shaping is off by default: reward == correct
    assert t.reward_components == {"correct": float(expected), "format": 0.0, "tool_error_penalty": 0.0,
                                   "overlong_penalty": 0.0}


def test_table_metrics(scored):
    trajs, m = scored
    n_right = sum(1 for r in TABLE if r[3])
    assert m["reward/accuracy"] == pytest.approx(n_right / len(TABLE))
    assert m["reward/mean"] == pytest.approx(n_right / len(TABLE))
    assert m["reward/format"] == pytest.approx(sum(t.answer is not None for t in trajs.values()) / len(TABLE))
    assert m["reward/verify_timeouts"] == 0.0
