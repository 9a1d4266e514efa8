"""Trajectory filters applied between reward and collate.

    result = filter_trajectories(trajs, cfg.algo, group_size=cfg.rollout.n_samples)   # records.FilterResult
    short = needs_refill(result.kept, target_groups)        # how many more prompts the loop should sample
    n = samples_per_prompt(cfg)                              # what the rollout samples per prompt ('roc' oversamples)

Order: (1) drop trajectories with a sandbox infrastructure failure (algo.drop_sandbox_errors) — the code was not
at fault, so neither reward nor penalty is deserved; (2) the tool-outcome filters named in algo.filters, in that
order (`TOOL_FILTERS`: `roc`, `void_turns`, below); (3) overlong filter (algo.overlong_filter): responses that ended
with finish reason 'length' stay in their group (their reward still shapes the group baseline) but no token of
theirs trains — the kept copy has an all-zero loss mask and zero log-probs; (4) dynamic sampling
(algo.dynamic_sampling): groups whose remaining rewards are all equal (all right / all wrong) have zero relative
advantage and are dropped whole — after (2), so a group the tool filters left uniform is dropped too. The input list
and its trajectories are never modified (the loop logs them).

Group statistics are those of the kept set. Advantages are computed after filtering (`train.update.prepare_batch`
collates `kept`, then `compute_advantages` groups rows by group_id), so a group's baseline and spread are its
kept members' — the G trajectories `roc` kept out of its oversampled roc_oversample·G, the survivors of
`void_turns` — never those of the dropped ones. The one deliberate exception is (3): an overlong-masked copy is in
the kept set, so it counts in its group's baseline while training nothing.

Tool-outcome filters read the typed records (`types.ToolCall.status`, `executed`, `output_segment`,
`Trajectory.segments`, `answer`, `finish_reason`), never the text:
  * tool error: an executed call whose status is the code's fault (`TOOL_ERROR_STATUSES`: error, timeout, oom,
    killed); `sandbox_error` is infrastructure (handled by (1)), `skipped` is a format issue.
  * format issues (`format_issues`): code blocks written past the tool budget (skipped calls), a response cut by
    the length budget, no extractable final answer — one count each.
  * `roc` (rStar2-Agent's GRPO-RoC, Resample-on-Correct): the rollout samples roc_oversample·G responses per prompt
    (`samples_per_prompt`); per group the filter keeps G: k = round(G·correct/N) correct ones (at least one when
    any is correct and at least one failure kept when any failed, so down-sampling never makes a mixed group
    uniform), ranked by fewest tool errors, then fewest format issues, then sample index; the G - k failures are a
    uniform random subset (seeded by problem id, group id and policy version: reproducible and resume-safe), which
    keeps the failures' mix of failure modes. Groups with at most G members are kept whole.
  * `void_turns` (SimpleTIR): drop a trajectory with a turn that produced neither a code block nor a final answer.
    Every turn but the last ends at a code block by construction (the rollout only splits turns at one), so the test
    is on the last model turn: void when no code block closes it (no tool segment after it, no skipped call at the
    end) and the trajectory has no final answer. A response cut by the length budget is not called void: its turn
    did not end, and it is the overlong filter's to handle.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections import OrderedDict
from typing import Callable, Sequence

from zerotir.records import FilterResult
from zerotir.types import Trajectory

log = logging.getLogger("zerotir.filters")

TOOL_ERROR_STATUSES: tuple[str, ...] = ("error", "timeout", "oom", "killed")
"""Executed-call statuses that are the code's fault (a tool error for `roc`)."""


# ------------------------------------------------------------------------------------------ typed predicates


def tool_errors(t: Trajectory) -> int:
    """Executed calls whose status is the code's fault (`TOOL_ERROR_STATUSES`)."""
    return sum(1 for c in t.tool_calls if c.executed and c.status in TOOL_ERROR_STATUSES)


def format_issues(t: Trajectory) -> int:
    """Skipped code blocks (written past the tool budget) + 1 if cut by the length budget + 1 if no final answer."""
    skipped = sum(1 for c in t.tool_calls if not c.executed)
    return skipped + int(t.finish_reason == "length") + int(t.answer is None)


def has_void_turn(t: Trajectory) -> bool:
    """The last model turn produced neither a code block nor a final answer (see the module docstring)."""
    if t.finish_reason == "length" or t.answer is not None:
        return False
    if t.segments and t.segments[-1].kind == "tool":
        return False            # the last turn ended in a code block whose output (or budget message) follows
    if t.tool_calls and t.tool_calls[-1].output_segment is None:
        return False            # a code block closed the last turn but was not run (tool budget spent, no message)
    return True


# ------------------------------------------------------------------------------------------ registered filters


def _groups(trajs: Sequence[Trajectory]) -> OrderedDict[int, list[Trajectory]]:
    groups: OrderedDict[int, list[Trajectory]] = OrderedDict()
    for t in trajs:
        groups.setdefault(t.group_id, []).append(t)
    return groups


def roc_split(n_correct: int, n_failed: int, keep: int) -> tuple[int, int]:
    """(correct, failed) counts `roc` keeps out of a group of n_correct + n_failed, `keep` in all: in proportion
    (correct rounded half up), with at least one of each kind that exists."""
    n = n_correct + n_failed
    if n <= keep:
        return n_correct, n_failed
    k = int(keep * n_correct / n + 0.5)
    if n_correct:
        k = max(k, 1)
    if n_failed:
        k = min(k, keep - 1)
    k = min(k, n_correct)
    return k, min(keep - k, n_failed)


def roc_filter(trajs: Sequence[Trajectory], group_size: int) -> list[Trajectory]:
    """GRPO-RoC down-sampling of each group to `group_size` (see the module docstring). Order within a group is
    preserved (by sample index)."""
    kept: list[Trajectory] = []
    for members in _groups(trajs).values():
        good = [t for t in members if t.correct]
        bad = [t for t in members if not t.correct]
        k_good, k_bad = roc_split(len(good), len(bad), group_size)
        best = sorted(good, key=lambda t: (tool_errors(t), format_issues(t), t.sample_index))[:k_good]
        first = members[0]
        rng = random.Random(f"roc:{first.problem_id}:{first.group_id}:{first.policy_version}")
        chosen = {id(t) for t in best} | {id(t) for t in rng.sample(bad, k_bad)}
        kept.extend(sorted((t for t in members if id(t) in chosen), key=lambda t: t.sample_index))
    return kept


def void_turns_filter(trajs: Sequence[Trajectory], group_size: int) -> list[Trajectory]:
    """Drop trajectories with a void turn (`has_void_turn`)."""
    return [t for t in trajs if not has_void_turn(t)]


TOOL_FILTERS: dict[str, Callable[[Sequence[Trajectory], int], list[Trajectory]]] = {
    "roc": roc_filter,
    "void_turns": void_turns_filter,
}
"""Tool-outcome filters by name (algo.filters): (trajectories, group size) -> kept trajectories, in input order."""


def check_filter_config(cfg) -> None:
    """Raise ValueError naming the field when an AlgoConfig names an unknown filter or a bad oversampling factor."""
    for name in cfg.filters:
        if name not in TOOL_FILTERS:
            raise ValueError(f"algo.filters: unknown filter {name!r} (known: {sorted(TOOL_FILTERS)})")
    if len(set(cfg.filters)) != len(cfg.filters):
        raise ValueError(f"algo.filters: a filter is named twice: {cfg.filters}")
    if "roc" in cfg.filters and cfg.roc_oversample < 1:
        raise ValueError(f"algo.roc_oversample must be >= 1 with the 'roc' filter, got {cfg.roc_oversample}")


def samples_per_prompt(cfg) -> int:
    """Responses the rollout samples per prompt for a `Config`: rollout.n_samples, times algo.roc_oversample when
    the 'roc' filter is on (it keeps rollout.n_samples of them)."""
    factor = cfg.algo.roc_oversample if "roc" in cfg.algo.filters else 1
    return cfg.rollout.n_samples * factor


# ------------------------------------------------------------------------------------------ the filter phase


def _masked_copy(t: Trajectory) -> Trajectory:
    n = len(t.response_ids)
    return dataclasses.replace(t, loss_mask=[0] * n, logprobs=[0.0] * n,
                               raw_logprobs=[0.0] * len(t.raw_logprobs))


def _result(kept: list[Trajectory], **counts: int) -> FilterResult:
    """The FilterResult, with the tool-filter counts (dropped_roc, dropped_void_turns) where it has fields for
    them. Until `records.FilterResult` carries those fields (and telemetry their filter/* names), they are logged
    here instead of being lost."""
    have = {f.name for f in dataclasses.fields(FilterResult)}
    missing = {k: v for k, v in counts.items() if k not in have}
    if any(missing.values()):
        log.info("tool-outcome filters dropped %s", ", ".join(f"{k}={v}" for k, v in missing.items()))
    return FilterResult(kept=tuple(kept), **{k: v for k, v in counts.items() if k in have})


def filter_trajectories(trajs: Sequence[Trajectory], cfg, group_size: int | None = None) -> FilterResult:
    """Apply the filters enabled in `cfg` (an AlgoConfig). `group_size` (rollout.n_samples) is what `roc` keeps per
    group. The result's counts add across refill rounds (`FilterResult.concat`); its `metrics()` are the filter/*
    names."""
    kept = list(trajs)
    counts = dict.fromkeys(("dropped_sandbox_errors", "dropped_overlong", "dropped_uniform_groups"), 0)
    if cfg.drop_sandbox_errors:
        kept = [t for t in kept if not t.sandbox_error]
        counts["dropped_sandbox_errors"] = len(trajs) - len(kept)
    if cfg.filters:
        check_filter_config(cfg)
        if "roc" in cfg.filters and group_size is None:
            raise ValueError("filter_trajectories: the 'roc' filter needs group_size (rollout.n_samples)")
    for name in cfg.filters:
        before = len(kept)
        kept = TOOL_FILTERS[name](kept, group_size or 0)
        counts[f"dropped_{name}"] = before - len(kept)
    if cfg.overlong_filter:
        counts["dropped_overlong"] = sum(t.finish_reason == "length" for t in kept)
        kept = [_masked_copy(t) if t.finish_reason == "length" else t for t in kept]
    if cfg.dynamic_sampling:
        survivors = []
        for members in _groups(kept).values():
            # A group left with one member also carries no relative signal: drop it too.
            if len(members) < 2 or len({float(t.reward) for t in members}) == 1:
                counts["dropped_uniform_groups"] += 1
            else:
                survivors.extend(members)
        kept = survivors
    # A group whose members are all overlong-masked trains nothing; it still counts as kept (its copies are cheap).
    return _result(kept, **counts)


def needs_refill(kept: Sequence[Trajectory], target_groups: int) -> int:
    """How many more prompts dynamic sampling should draw so the step trains on `target_groups` groups (>= 0)."""
    return max(0, target_groups - len({t.group_id for t in kept}))
