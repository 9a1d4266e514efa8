"""THE metrics module: every `rollout/*`, `reward/*`, `filter/*` and `eval/*` tool figure and the training loop's
metrics row are computed here, from trajectories and step records only (names from `zerotir.telemetry.METRICS`).

    m = trajectory_metrics(trajs)            # {"code_ratio": ..., "accuracy": ..., ...}  (base names)
    training_names(m)                        # {"rollout/code_ratio": ..., "reward/accuracy": ..., ...}
    prefixed(m, "eval/")                     # {"eval/code_ratio": ..., ...}  (eval uses the same function)
    step_row(step, epoch, rollout, filtered, update, ...)   # one metrics.jsonl row of the training loop

Definitions (the rollout's, see zerotir.types): a response "uses code" when it has at least one EXECUTED call;
error / timeout rates are shares of executed calls (0 when nothing ran); response tokens are the sampled (model)
tokens, tool tokens the inserted ones; accuracy is the share of trajectories whose answer verified (with the same
number of samples per problem, as in eval and in GRPO groups, this equals avg@k); accuracy with / without code are
shares of the subsets (0 when a subset is empty).

Nothing here is ever averaged across shards or refill batches: callers join the trajectories first
(`records.RolloutResult.concat`) and compute once.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from zerotir.records import EvalResult, FilterResult, RolloutResult, UpdateResult
from zerotir.types import Trajectory


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def trajectory_metrics(trajs: Sequence[Trajectory]) -> dict[str, float]:
    """Every per-trajectory figure, under base names (see `TRAINING_NAMES` for where each is logged in training)."""
    executed = [c for t in trajs for c in t.tool_calls if c.executed]
    code = [t for t in trajs if t.num_tool_calls > 0]
    text = [t for t in trajs if t.num_tool_calls == 0]
    return {
        "code_ratio": _mean([float(t.num_tool_calls > 0) for t in trajs]),
        "tool_calls_per_response": _mean([float(t.num_tool_calls) for t in trajs]),
        "tool_error_rate": _mean([float(c.status == "error") for c in executed]),
        "tool_timeout_rate": _mean([float(c.status == "timeout") for c in executed]),
        "tool_timeouts": float(sum(c.status == "timeout" for c in executed)),
        "tool_oom": float(sum(c.status == "oom" for c in executed)),
        "sandbox_errors": float(sum(c.status == "sandbox_error" for c in executed)),
        "budget_exceeded_calls": float(sum(not c.executed for t in trajs for c in t.tool_calls)),
        "response_tokens": _mean([float(t.num_sampled_tokens) for t in trajs]),
        "tool_tokens": _mean([float(t.num_tool_tokens) for t in trajs]),
        "total_tokens": _mean([float(len(t.response_ids)) for t in trajs]),
        "truncation_rate": _mean([float(t.finish_reason == "length") for t in trajs]),
        "num_trajectories": float(len(trajs)),
        "tool_seconds": float(sum(c.duration_s for c in executed)),
        "reward_mean": _mean([float(t.reward) for t in trajs]),
        "accuracy": _mean([float(bool(t.correct)) for t in trajs]),
        "format": _mean([float(t.answer is not None) for t in trajs]),
        "accuracy_with_code": _mean([float(bool(t.correct)) for t in code]),
        "accuracy_without_code": _mean([float(bool(t.correct)) for t in text]),
    }


TRAINING_NAMES: dict[str, str] = {
    "code_ratio": "rollout/code_ratio", "tool_calls_per_response": "rollout/tool_calls_per_response",
    "tool_error_rate": "rollout/tool_error_rate", "tool_timeouts": "rollout/tool_timeouts",
    "tool_oom": "rollout/tool_oom", "sandbox_errors": "rollout/sandbox_errors",
    "budget_exceeded_calls": "rollout/budget_exceeded_calls", "response_tokens": "rollout/response_tokens",
    "tool_tokens": "rollout/tool_tokens", "total_tokens": "rollout/total_tokens",
    "truncation_rate": "rollout/truncation_rate", "num_trajectories": "rollout/num_trajectories",
    "tool_seconds": "perf/tool_seconds",
    "reward_mean": "reward/mean", "accuracy": "reward/accuracy", "format": "reward/format",
    "accuracy_with_code": "reward/accuracy_with_code", "accuracy_without_code": "reward/accuracy_without_code",
}
"""Base name → the training row's name. (tool_timeout_rate is an eval figure; training logs the count.)"""


def training_names(m: Mapping[str, float]) -> dict[str, float]:
    return {TRAINING_NAMES[k]: v for k, v in m.items() if k in TRAINING_NAMES}


def prefixed(m: Mapping[str, float], prefix: str, names: Sequence[str] | None = None) -> dict[str, float]:
    """`prefix + name` for each of `names` (default: all) — eval's view, e.g. prefix 'eval/'."""
    return {prefix + k: float(m[k]) for k in (names if names is not None else m)}


def staleness(trajs: Sequence[Trajectory], version: int) -> dict[str, float]:
    """Policy-version lag of the trajectories trained on when the learner is at `version`."""
    lags = [version - t.policy_version for t in trajs]
    return {"rollout/staleness_mean": _mean([float(x) for x in lags]),
            "rollout/staleness_max": float(max(lags, default=0))}


def step_row(step: int, epoch: int, rollout: RolloutResult, filtered: FilterResult, update: UpdateResult,
             evaluation: EvalResult | None, *, update_seconds: float, step_seconds: float,
             compute: Mapping[str, float]) -> dict[str, float]:
    """One metrics.jsonl row of the training loop. `rollout` holds every trajectory of the step (refills joined);
    the trainer's version before this step's update is step - 1. Without an optimizer step the row has no loss/*
    and optim/* names; without an eval, no eval/* names."""
    row: dict[str, float] = {"step": step, "epoch": epoch, "policy_version": step}
    row.update(training_names(trajectory_metrics(rollout.trajectories)))
    row["reward/verify_timeouts"] = float(rollout.verify_timeouts)
    row.update(staleness(filtered.kept, step - 1))
    row.update(filtered.metrics())
    row.update(update.metrics())
    row.update({"perf/rollout_seconds": rollout.rollout_seconds, "perf/reward_seconds": rollout.reward_seconds,
                "perf/update_seconds": update_seconds,
                "perf/tokens_per_second": rollout.sampled_tokens / max(rollout.rollout_seconds, 1e-9)})
    if evaluation is not None:
        row.update(evaluation.metrics)
        row["perf/eval_seconds"] = evaluation.seconds
    row.update(compute)
    row["perf/step_seconds"] = step_seconds
    return row
