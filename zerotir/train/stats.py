"""Small pure pieces of the training loop: the prompt sampler (with a resumable cursor), per-step rollout/reward
metrics computed from trajectories, minibatch splitting, and loss-stat averaging."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from zerotir.types import Problem, Trajectory


@dataclass
class PromptSampler:
    """Walks the training problems epoch by epoch; epoch e's order is a pure function of (seed, e), so the cursor
    (epoch, position) is all a checkpoint needs to continue with the same prompts."""

    problems: Sequence[Problem]
    seed: int = 0
    shuffle: bool = True
    epoch: int = 0
    pos: int = 0

    def order(self, epoch: int) -> list[int]:
        n = len(self.problems)
        if not self.shuffle:
            return list(range(n))
        return np.random.default_rng([self.seed, epoch]).permutation(n).tolist()

    def take(self, k: int) -> list[Problem]:
        out: list[Problem] = []
        while len(out) < k:
            order = self.order(self.epoch)
            need = k - len(out)
            chunk = order[self.pos:self.pos + need]
            out.extend(self.problems[i] for i in chunk)
            self.pos += len(chunk)
            if self.pos >= len(order):
                self.epoch, self.pos = self.epoch + 1, 0
        return out

    @property
    def cursor(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def restore(self, cursor: dict[str, int]) -> None:
        self.epoch, self.pos = int(cursor["epoch"]), int(cursor["pos"])


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def rollout_metrics(trajs: Sequence[Trajectory]) -> dict[str, float]:
    """rollout/* metrics of one step's trajectories (names from telemetry.METRICS)."""
    executed = [c for t in trajs for c in t.tool_calls if c.executed]
    return {
        "rollout/code_ratio": _mean([float(t.num_tool_calls > 0) for t in trajs]),
        "rollout/tool_calls_per_response": _mean([float(t.num_tool_calls) for t in trajs]),
        "rollout/tool_error_rate": _mean([float(c.status == "error") for c in executed]),
        "rollout/tool_timeouts": float(sum(c.status == "timeout" for c in executed)),
        "rollout/tool_oom": float(sum(c.status == "oom" for c in executed)),
        "rollout/sandbox_errors": float(sum(c.status == "sandbox_error" for c in executed)),
        "rollout/budget_exceeded_calls": float(sum(not c.executed for t in trajs for c in t.tool_calls)),
        "rollout/response_tokens": _mean([float(t.num_sampled_tokens) for t in trajs]),
        "rollout/tool_tokens": _mean([float(t.num_tool_tokens) for t in trajs]),
        "rollout/total_tokens": _mean([float(len(t.response_ids)) for t in trajs]),
        "rollout/truncation_rate": _mean([float(t.finish_reason == "length") for t in trajs]),
        "rollout/num_trajectories": float(len(trajs)),
        "perf/tool_seconds": float(sum(c.duration_s for c in executed)),
    }


def reward_metrics(trajs: Sequence[Trajectory]) -> dict[str, float]:
    """reward/* metrics from scored trajectories (reward, correct, answer filled in by the scorer)."""
    code = [t for t in trajs if t.num_tool_calls > 0]
    text = [t for t in trajs if t.num_tool_calls == 0]
    return {
        "reward/mean": _mean([t.reward for t in trajs]),
        "reward/accuracy": _mean([float(t.correct) for t in trajs]),
        "reward/format": _mean([float(t.answer is not None) for t in trajs]),
        "reward/accuracy_with_code": _mean([float(t.correct) for t in code]),
        "reward/accuracy_without_code": _mean([float(t.correct) for t in text]),
    }


def staleness(trajs: Sequence[Trajectory], version: int) -> dict[str, float]:
    lags = [version - t.policy_version for t in trajs]
    return {"rollout/staleness_mean": _mean([float(x) for x in lags]), "rollout/staleness_max": float(max(lags, default=0))}


def split_minibatches(n: int, k: int, seed: Sequence[int]) -> list[list[int]]:
    """A seeded permutation of range(n) cut into k near-equal parts (empty parts dropped)."""
    perm = np.random.default_rng(list(seed)).permutation(n).tolist()
    k = max(1, min(k, n))
    return [perm[i::k] for i in range(k) if perm[i::k]]


def mean_stats(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Average of the learner's per-update stats (max for the ratio max)."""
    if not rows:
        return {}
    out = {k: _mean([r[k] for r in rows]) for k in rows[0]}
    if "loss/is_ratio_max" in out:
        out["loss/is_ratio_max"] = max(r["loss/is_ratio_max"] for r in rows)
    return out
