"""RewardScorer: components, shaping terms (hand values), metrics by code use, timeouts counted."""

from __future__ import annotations

import pytest

from zerotir.config import RewardConfig
from zerotir.metrics import trajectory_metrics, training_names
from zerotir.reward import RewardScorer, overlong_penalty
from zerotir.telemetry import METRICS
from zerotir.types import ToolCall, Trajectory


def traj(text, gold, *, calls=(), n=10, finish="eos"):
    return Trajectory(problem_id="p", prompt_ids=[1], response_ids=[2] * n, loss_mask=[1] * n, logprobs=[0.0] * n,
                      response_text=text, gold_answer=gold, finish_reason=finish,
                      tool_calls=[ToolCall(code="x", status=s, executed=s != "skipped") for s in calls])


def test_overlong_penalty_hand():
    assert overlong_penalty(70, 100, 0.5, 20, False) == 0.0            # before the ramp (starts at 80)
    assert overlong_penalty(80, 100, 0.5, 20, False) == 0.0
    assert overlong_penalty(95, 100, 0.5, 20, False) == pytest.approx(-0.375)   # -.5 * 15/20
    assert overlong_penalty(120, 100, 0.5, 20, True) == pytest.approx(-0.5)
    assert overlong_penalty(100, 100, 0.5, 0, True) == -0.5 and overlong_penalty(99, 100, 0.5, 0, False) == 0.0
    assert overlong_penalty(100, 100, 0.0, 20, True) == 0.0


def test_components_with_shaping_on(verifier):
    cfg = RewardConfig(format_reward=0.1, tool_error_penalty=0.2, overlong_penalty=1.0, overlong_buffer_tokens=10)
    ts = [traj("\\boxed{6}", "6", calls=("ok", "error", "timeout", "sandbox_error", "skipped")),  # 2 code errors
          traj("\\boxed{5}", "6", n=95),                     # wrong, 5 tokens into the 10-token ramp before 100
          traj("no answer", "6", n=100, finish="length")]
    with RewardScorer(cfg, verifier=verifier) as s:
        s.score(ts, max_total_tokens=100)
    m = training_names(trajectory_metrics(ts))  # the scorer fills trajectories; metrics come from them
    assert ts[0].reward_components == pytest.approx({"correct": 1.0, "format": 0.1, "tool_error_penalty": -0.4,
                                                     "overlong_penalty": 0.0})
    assert ts[0].reward == pytest.approx(0.7) and ts[0].answer == "6" and ts[0].correct
    assert ts[1].reward_components == pytest.approx({"correct": 0.0, "format": 0.1, "tool_error_penalty": 0.0,
                                                     "overlong_penalty": -0.5})
    assert ts[2].answer is None and ts[2].reward == pytest.approx(-1.0)
    assert set(m) <= set(METRICS)
    assert m["reward/mean"] == pytest.approx((0.7 - 0.4 - 1.0) / 3)
    assert m["reward/accuracy"] == pytest.approx(1 / 3) and m["reward/format"] == pytest.approx(2 / 3)
    assert m["reward/accuracy_with_code"] == 1.0 and m["reward/accuracy_without_code"] == 0.0


def test_answer_tag_format(verifier):
    ts = [traj("<answer>\\boxed{2}</answer>", "2"), traj("\\boxed{2}", "2")]
    with RewardScorer(RewardConfig(answer_format="answer_tag"), verifier=verifier) as s:
        s.score(ts, 100)
    assert [t.correct for t in ts] == [True, False]


def test_hostile_response_counts_a_timeout_and_scores_zero(verifier):
    ts = [traj("\\boxed{10^{10^{10^{10}}}}", "3"), traj("\\boxed{3}", "3")]
    with RewardScorer(RewardConfig(), verifier=verifier) as s:
        summary = s.score(ts, 100)
    assert [t.reward for t in ts] == [0.0, 1.0]
    assert summary.verify_timeouts in (0, 1)   # 1 when the time limit stopped it, 0 when sympy errored
    assert ts[0].reward_components["correct"] == 0.0


def test_bad_answer_format_is_a_clear_error():
    with pytest.raises(ValueError, match="reward.answer_format"):
        RewardScorer(RewardConfig(answer_format="json"))


def test_empty_batch(verifier):
    with RewardScorer(RewardConfig(), verifier=verifier) as s:
        summary = s.score([], 100)
    assert summary.verify_timeouts == 0
