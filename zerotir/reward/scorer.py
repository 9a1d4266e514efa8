"""The training/eval reward: extract the final answer, verify it, add the optional shaping terms.

    with RewardScorer(cfg.reward) as scorer:
        summary = scorer.score(trajectories, max_total_tokens=cfg.rollout.max_total_tokens)

`score` fills, on each trajectory: answer (extracted from the model's own text — never from tool output blocks, see
`reward.extract.trajectory_answer` — or None), correct, reward, and reward_components with keys
    correct             1.0 when the answer verified correct, else 0.0
    format              reward.format_reward when an answer was found in reward.answer_format, else 0.0
    tool_error_penalty  -reward.tool_error_penalty x executed calls that ended in error/timeout/oom/killed (<= 0)
    overlong_penalty    soft length penalty (<= 0), see `overlong_penalty`
and reward = the sum of the components. With the defaults (all shaping off, as in the paper) reward == correct.
Sandbox infrastructure failures (status 'sandbox_error') are never the policy's fault and are not penalised.
It returns a `ScoreSummary` holding what the trajectories cannot: the count of verifications that hit the time
limit. Metrics (reward/accuracy, ...) are computed from the scored trajectories by `zerotir.metrics`, never here.
It never raises on a bad response: answers the verifier cannot decide score wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zerotir.reward.extract import ANSWER_FORMATS, trajectory_answer
from zerotir.reward.verifier import Verifier, VerifyResult

TOOL_ERROR_STATUSES: frozenset[str] = frozenset({"error", "timeout", "oom", "killed"})
"""Executed-call statuses that count as the code's failure (sandbox_error is the infrastructure's)."""


def overlong_penalty(length: int, max_total_tokens: int, penalty: float, buffer_tokens: int,
                     truncated: bool) -> float:
    """Soft overlong penalty (DAPO-style), a value in [-penalty, 0].

    With buffer_tokens = B > 0 it ramps linearly from 0 at length max-B to -penalty at length >= max:
    -penalty·(length - (max - B)) / B. With B = 0 it is -penalty exactly when the response was truncated.
    """
    if penalty <= 0:
        return 0.0
    if buffer_tokens <= 0:
        return -float(penalty) if truncated else 0.0
    start = max_total_tokens - buffer_tokens
    if length <= start:
        return 0.0
    return -float(penalty) * min(1.0, (length - start) / buffer_tokens)


@dataclass(frozen=True)
class ScoreSummary:
    """What one `score` call knows beyond the trajectories' own fields."""

    verify_timeouts: int = 0
    """Verifications stopped by the verifier's time limit (those answers scored wrong)."""


class RewardScorer:
    """Owns a Verifier (worker processes); use as a context manager or call close().

    A `verifier` passed in is borrowed: the scorer uses it but leaves closing it to its owner."""

    def __init__(self, cfg: Any, verifier: Verifier | None = None):
        if cfg.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"reward.answer_format={cfg.answer_format!r}: expected one of {ANSWER_FORMATS}")
        self.cfg = cfg
        self._owns_verifier = verifier is None
        self.verifier = verifier or Verifier(workers=cfg.verify_workers, timeout_s=cfg.verify_timeout_s,
                                             memory_mb=cfg.verify_memory_mb,
                                             max_answer_chars=cfg.verify_max_answer_chars)

    def __enter__(self) -> "RewardScorer":
        self.verifier.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_verifier:
            self.verifier.close()

    def score(self, trajectories: list, max_total_tokens: int) -> ScoreSummary:
        """Score `trajectories` in place (answer, correct, reward, reward_components)."""
        c = self.cfg
        answers = [trajectory_answer(t, c.answer_format) for t in trajectories]
        todo = [i for i, a in enumerate(answers) if a is not None and str(trajectories[i].gold_answer).strip()]
        verdicts: dict[int, VerifyResult] = dict(zip(todo, self.verifier.verify_many(
            [(answers[i], str(trajectories[i].gold_answer)) for i in todo])))
        timeouts = 0
        for i, t in enumerate(trajectories):
            v = verdicts.get(i)
            timeouts += int(bool(v and v.timed_out))
            correct = bool(v and v.correct)
            n_err = sum(1 for call in t.tool_calls if call.executed and call.status in TOOL_ERROR_STATUSES)
            comps = {
                "correct": 1.0 if correct else 0.0,
                "format": float(c.format_reward) if answers[i] is not None else 0.0,
                "tool_error_penalty": 0.0 - float(c.tool_error_penalty) * n_err,
                "overlong_penalty": overlong_penalty(len(t.response_ids), max_total_tokens, c.overlong_penalty,
                                                     c.overlong_buffer_tokens, t.finish_reason == "length"),
            }
            t.answer = answers[i]
            t.correct = correct
            t.reward_components = comps
            t.reward = float(sum(comps.values()))
        return ScoreSummary(verify_timeouts=timeouts)
