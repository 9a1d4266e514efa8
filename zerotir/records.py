"""Step records: what the training loop's phases hand each other, frozen and typed.

    rollout phase ──RolloutResult──▶ filter ──FilterResult──▶ update ──UpdateResult──▶ metrics row

`types.py` holds the per-item records (Problem, Trajectory, TrainBatch); this module holds the per-STEP ones.

Combining rule (the reason these exist): parts of one step — dynamic-sampling refills, Ray rollout shards — are
combined with `concat`, where trajectories are joined and counts add. No metric is ever stored here or averaged
across parts: every `rollout/*` and `reward/*` figure is computed afterwards from the joined trajectories by
`zerotir.metrics.trajectory_metrics`. (A ratio over a subset, e.g. accuracy among code-using trajectories, cannot be
averaged by part size; computing it from the joined list is exact by construction.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from zerotir.types import Trajectory


@dataclass(frozen=True)
class RolloutResult:
    """Scored trajectories of one rollout call (or of several, joined), with the counts the trajectories lack."""

    trajectories: tuple[Trajectory, ...]
    rollout_seconds: float = 0.0
    """Wall time of generation + tools."""
    reward_seconds: float = 0.0
    """Wall time of verification."""
    verify_timeouts: int = 0
    """Verifications that hit the verifier's time limit (not recorded on trajectories)."""
    step: int = 0
    """The training step these rollouts were launched for (0 outside training)."""

    @staticmethod
    def concat(parts: Sequence["RolloutResult"], parallel: bool = False) -> "RolloutResult":
        """Join `parts` in order: trajectories concatenated, counts added. Seconds add for parts that ran one after
        another (refills); with `parallel=True` (shards of one call on several workers) the slowest part's seconds
        are the call's."""
        if not parts:
            return RolloutResult(())
        join = max if parallel else sum
        return RolloutResult(
            trajectories=tuple(t for p in parts for t in p.trajectories),
            rollout_seconds=float(join(p.rollout_seconds for p in parts)),
            reward_seconds=float(join(p.reward_seconds for p in parts)),
            verify_timeouts=sum(p.verify_timeouts for p in parts),
            step=parts[0].step)

    @property
    def min_version(self) -> int:
        """Oldest policy version among the trajectories (the batch's worst lag)."""
        return min((t.policy_version for t in self.trajectories), default=0)

    @property
    def sampled_tokens(self) -> int:
        return sum(t.num_sampled_tokens for t in self.trajectories)


@dataclass(frozen=True)
class FilterResult:
    """What survived the filters (`algos.filters.filter_trajectories`), with additive drop counts."""

    kept: tuple[Trajectory, ...]
    dropped_sandbox_errors: int = 0
    """Trajectories dropped for a sandbox infrastructure failure."""
    dropped_uniform_groups: int = 0
    """Groups (not trajectories) dropped by dynamic sampling: all rewards equal."""
    dropped_overlong: int = 0
    """Trajectories kept for the group baseline but masked out of the loss (overlong filter)."""
    dropped_roc: int = 0
    """Trajectories the 'roc' tool-outcome filter down-sampled away (algo.filters)."""
    dropped_void_turns: int = 0
    """Trajectories dropped by the 'void_turns' tool-outcome filter (algo.filters)."""

    @staticmethod
    def concat(parts: Sequence["FilterResult"]) -> "FilterResult":
        return FilterResult(kept=tuple(t for p in parts for t in p.kept),
                            dropped_sandbox_errors=sum(p.dropped_sandbox_errors for p in parts),
                            dropped_uniform_groups=sum(p.dropped_uniform_groups for p in parts),
                            dropped_overlong=sum(p.dropped_overlong for p in parts),
                            dropped_roc=sum(p.dropped_roc for p in parts),
                            dropped_void_turns=sum(p.dropped_void_turns for p in parts))

    @property
    def groups(self) -> int:
        return len({t.group_id for t in self.kept})

    def metrics(self) -> dict[str, float]:
        """filter/* names (telemetry.METRICS)."""
        return {"filter/kept": float(len(self.kept)),
                "filter/dropped_sandbox_errors": float(self.dropped_sandbox_errors),
                "filter/dropped_uniform_groups": float(self.dropped_uniform_groups),
                "filter/dropped_overlong": float(self.dropped_overlong),
                "filter/dropped_roc": float(self.dropped_roc),
                "filter/dropped_void_turns": float(self.dropped_void_turns)}


@dataclass(frozen=True)
class UpdateResult:
    """The learner's update phase: one stats dict per optimizer step (loss/* and optim/* names), in order, and the
    tokens the learner processed (for compute accounting)."""

    steps: tuple[dict[str, float], ...] = ()
    trained_tokens: int = 0
    """Prompt + response tokens through forward+backward, summed over PPO epochs."""
    flops: float = 0.0
    """Estimated FLOPs of the whole update phase (see zerotir.train.compute)."""

    def metrics(self) -> dict[str, float]:
        """Mean of each stat over the optimizer steps (max for loss/is_ratio_max). A phase without an optimizer
        step returns {} — the row then omits loss/* and optim/* rather than logging zeros that fits would read."""
        if not self.steps:
            return {}
        out = {k: sum(r[k] for r in self.steps) / len(self.steps) for k in self.steps[0]}
        if "loss/is_ratio_max" in out:
            out["loss/is_ratio_max"] = max(r["loss/is_ratio_max"] for r in self.steps)
        return out


@dataclass(frozen=True)
class EvalResult:
    """A periodic held-out eval: its eval/* metrics row and its wall time. (Eval is not training compute: it is
    left out of compute/*.)"""

    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def rollout_seed(seed: int, step: int, part: int = 0) -> int:
    """THE seed of one rollout call: part 0 is a step's first rollout, part k its k-th dynamic-sampling refill (or
    eval chunk k, with step 0). Every rollout — local, Ray worker, eval — derives its seed here, so the same run
    samples the same tokens on any backend and after a resume."""
    return seed * 1_000_003 + step * 101 + part
