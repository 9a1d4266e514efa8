"""Trajectory filters applied between reward and collate.

    result = filter_trajectories(trajs, cfg.algo)          # records.FilterResult: kept + additive drop counts
    short = needs_refill(result.kept, target_groups)        # how many more prompts the loop should sample

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
from typing import Sequence

from zerotir.records import FilterResult
from zerotir.types import Trajectory


def _masked_copy(t: Trajectory) -> Trajectory:
    n = len(t.response_ids)
    return dataclasses.replace(t, loss_mask=[0] * n, logprobs=[0.0] * n,
                               raw_logprobs=[0.0] * len(t.raw_logprobs))


def filter_trajectories(trajs: Sequence[Trajectory], cfg) -> FilterResult:
    """Apply the filters enabled in `cfg` (an AlgoConfig). The result's counts add across refill rounds
    (`FilterResult.concat`); its `metrics()` are the filter/* names."""
    kept = list(trajs)
    dropped_sandbox = dropped_overlong = dropped_groups = 0
    if cfg.drop_sandbox_errors:
        before = len(kept)
        kept = [t for t in kept if not t.sandbox_error]
        dropped_sandbox = before - len(kept)
    if cfg.overlong_filter:
        dropped_overlong = sum(t.finish_reason == "length" for t in kept)
        kept = [_masked_copy(t) if t.finish_reason == "length" else t for t in kept]
    if cfg.dynamic_sampling:
        groups: OrderedDict[int, list[Trajectory]] = OrderedDict()
        for t in kept:
            groups.setdefault(t.group_id, []).append(t)
        kept = []
        for members in groups.values():
            # A group left with one member also carries no relative signal: drop it too.
            if len(members) < 2 or len({float(t.reward) for t in members}) == 1:
                dropped_groups += 1
            else:
                kept.extend(members)
    # A group whose members are all overlong-masked trains nothing; it still counts as kept (its copies are cheap).
    return FilterResult(kept=tuple(kept), dropped_sandbox_errors=dropped_sandbox,
                        dropped_uniform_groups=dropped_groups, dropped_overlong=dropped_overlong)


def needs_refill(kept: Sequence[Trajectory], target_groups: int) -> int:
    """How many more prompts dynamic sampling should draw so the step trains on `target_groups` groups (>= 0)."""
    return max(0, target_groups - len({t.group_id for t in kept}))
