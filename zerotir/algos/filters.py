"""Trajectory filters applied between reward and collate.

    kept, stats = filter_trajectories(trajs, cfg.algo)      # stats: filter/* metric names, additive counts
    short = needs_refill(kept, target_groups)                # how many more prompts the loop should sample

Order: (1) drop trajectories with a sandbox infrastructure failure (algo.drop_sandbox_errors) — the code was not
at fault, so neither reward nor penalty is deserved; (2) overlong filter (algo.overlong_filter): responses that ended
with finish reason 'length' stay in their group (their reward still shapes the group baseline) but no token of
theirs trains — the kept copy has an all-zero loss mask and zero log-probs; (3) dynamic sampling
(algo.dynamic_sampling): groups whose remaining rewards are all equal (all right / all wrong) have zero relative
advantage and are dropped whole. The input list and its trajectories are never modified (the loop logs them).

An overlong-masked copy deliberately breaks the Trajectory invariant "model segments are mask 1": it is a training
row only, never written back or validated.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

from zerotir.types import Trajectory


def _masked_copy(t: Trajectory) -> Trajectory:
    n = len(t.response_ids)
    return dataclasses.replace(t, loss_mask=[0] * n, logprobs=[0.0] * n,
                               raw_logprobs=[0.0] * len(t.raw_logprobs))


def filter_trajectories(trajs: list[Trajectory], cfg) -> tuple[list[Trajectory], dict[str, float]]:
    """Apply the filters enabled in `cfg` (an AlgoConfig). Returns (kept trajectories, stats) with stats
    filter/kept, filter/dropped_sandbox_errors, filter/dropped_uniform_groups (groups), filter/dropped_overlong
    (trajectories masked out) — counts, so the loop may add the stats of refill rounds."""
    stats = {"filter/kept": 0.0, "filter/dropped_sandbox_errors": 0.0, "filter/dropped_uniform_groups": 0.0,
             "filter/dropped_overlong": 0.0}
    kept = list(trajs)
    if cfg.drop_sandbox_errors:
        before = len(kept)
        kept = [t for t in kept if not t.sandbox_error]
        stats["filter/dropped_sandbox_errors"] = float(before - len(kept))
    if cfg.overlong_filter:
        out = []
        for t in kept:
            if t.finish_reason == "length":
                stats["filter/dropped_overlong"] += 1.0
                out.append(_masked_copy(t))
            else:
                out.append(t)
        kept = out
    if cfg.dynamic_sampling:
        groups: OrderedDict[int, list[Trajectory]] = OrderedDict()
        for t in kept:
            groups.setdefault(t.group_id, []).append(t)
        kept = []
        for members in groups.values():
            # A group left with one member also carries no relative signal: drop it too.
            if len(members) < 2 or len({float(t.reward) for t in members}) == 1:
                stats["filter/dropped_uniform_groups"] += 1.0
            else:
                kept.extend(members)
    # A group whose members are all overlong-masked trains nothing; it still counts as kept (its copies are cheap).
    stats["filter/kept"] = float(len(kept))
    return kept, stats


def needs_refill(kept: list[Trajectory], target_groups: int) -> int:
    """How many more prompts dynamic sampling should draw so the step trains on `target_groups` groups (>= 0)."""
    return max(0, target_groups - len({t.group_id for t in kept}))
