"""Tree rollouts: where a trajectory branches, how many children it gets, and what the children share.

With `rollout.branch_factor` K > 1, a trajectory that has just received a tool output forks into K continuations
(ARPO, TreeRL). The children share, exactly:
  * the prefix tokens, log-probs, loss mask and segments (the trajectory builder in `tir.py` is copied; `tir.py`
    stays the only writer of the mask);
  * the engine's cache of that prefix: `engine.fork(request_id, child_ids)` (HFEngine) lets each child continue from
    the parent's parked cache; submitted together, one child prefills the tool block and the others copy its row,
    so the prefix is never recomputed (an engine without `fork` recomputes it: correct, slower);
  * the interpreter: child 0 keeps the parent's sandbox session, children 1..K-1 get `Session.fork()` of it, taken
    after the tool call, so each child sees the variables from before the fork and nothing a sibling sets after.
Budgets stay per leaf: each child continues with the parent's token count, turn count and executed-call count, so
`max_total_tokens`, `max_new_tokens_per_turn` and `max_tool_calls` bound every leaf exactly as an unbranched
trajectory; every leaf is validated like any trajectory (`Trajectory.validate`).

Where (`rollout.branch_at`): 'every_tool_output' branches after each executed call's output (not after a budget
message, not after a sandbox failure, not when no token budget is left); 'entropy' first runs a one-token probe
from the context (its token is discarded; the engine parks the context's cache for the children) and branches only
where the entropy of that next-token sampling distribution is >= `rollout.branch_entropy_threshold`.

How many (deterministic, so a seeded rollout is reproducible whatever the timing): a path branches at most
`rollout.branch_max_points` times; each root chain (one of the `n_samples` per prompt) may end in at most
`rollout.branch_max_leaves` leaves: a node with a budget of L leaves forks into k = min(K, L) children that split L
as evenly as possible (`split_budget`), and a node with L = 1 never branches.

Tree ids: every leaf gets a `LeafInfo` (group, root chain, path of child indices, branch positions). The leaves of
one prompt form its group (`group_id` = the prompt's, `sample_index` = the leaf's place in the group, root-major,
then by path). `rollout/*` metrics count each leaf as one trajectory: a shared prefix (its tokens and tool calls,
`tool_seconds` included) is counted once per leaf that contains it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

BRANCH_AT = ("every_tool_output", "entropy")


@dataclass(frozen=True)
class LeafInfo:
    """Where a leaf sits in its tree."""

    group_id: int
    root: int
    """Index of the root chain within its group (0 .. n_samples-1)."""
    path: tuple[int, ...]
    """Child index taken at each branch point, from the root down (() for a leaf that never branched)."""
    branch_points: tuple[int, ...]
    """Response length at each branch point: tokens [0, branch_points[d]) are shared with the siblings at depth d."""

    @property
    def tree_path(self) -> tuple[int, ...]:
        """(root, *path): unique within the group."""
        return (self.root, *self.path)


def sibling_ids(leaves: list[LeafInfo]) -> list[int]:
    """Dense id per leaf of its sibling group: the leaves sharing its last branch point (same group, same root, same
    path but the last index). A leaf that never branched is a group of its own (the rule: types.sibling_group_ids)."""
    from zerotir.types import sibling_group_ids

    return sibling_group_ids([(leaf.group_id, leaf.tree_path) for leaf in leaves])


def check_branching(cfg: Any) -> None:
    """Reject branching settings that cannot work, naming the field."""
    if cfg.branch_factor < 1:
        raise ValueError(f"rollout.branch_factor must be >= 1 (1 = no branching), got {cfg.branch_factor}")
    if cfg.branch_at not in BRANCH_AT:
        raise ValueError(f"rollout.branch_at={cfg.branch_at!r} is not one of {list(BRANCH_AT)}")
    if cfg.branch_max_points < 0:
        raise ValueError(f"rollout.branch_max_points must be >= 0, got {cfg.branch_max_points}")
    if cfg.branch_max_leaves < 1:
        raise ValueError(f"rollout.branch_max_leaves must be >= 1, got {cfg.branch_max_leaves}")


def root_budget(cfg: Any) -> int:
    """Leaves a root chain may end in (1 when branching is off)."""
    return cfg.branch_max_leaves if cfg.branch_factor > 1 else 1


def children(cfg: Any, depth: int, budget: int, room: int) -> int:
    """How many children a node at `depth` (branch points above it) with a leaf `budget` and `room` response
    tokens left gets after a tool output: 1 means it does not branch."""
    if cfg.branch_factor < 2 or depth >= cfg.branch_max_points or budget < 2 or room < 1:
        return 1
    return min(cfg.branch_factor, budget)


def split_budget(budget: int, k: int) -> list[int]:
    """Split a leaf budget over k children as evenly as possible, earlier children first: (5, 2) → [3, 2]."""
    return [budget // k + (1 if i < budget % k else 0) for i in range(k)]


def entropy_gate(out: Any, threshold: float) -> bool:
    """Whether the probe's next-token distribution is uncertain enough to branch (branch_at='entropy')."""
    if not getattr(out, "entropies", None):
        raise ValueError("rollout.branch_at='entropy' needs an engine that reports entropies "
                         "(SamplingParams.return_entropy; HFEngine does): use branch_at='every_tool_output'")
    return out.entropies[0] >= threshold


async def fork_sessions(session: Any, k: int) -> list[Any]:
    """[session, k-1 forks of it] (all None without a session). A fork that fails gives a session whose calls
    report 'sandbox_error', which ends that leaf like any sandbox failure."""
    if session is None:
        return [None] * k
    forks = [await asyncio.to_thread(session.fork) for _ in range(k - 1)]  # forking blocks on the sandbox
    return [session, *forks]


def fork_cache(engine: Any, request_id: str | None, child_ids: list[str]) -> list[str | None]:
    """The `prefix_of` of each child: its own handle on the parent's parked cache when the engine can `fork`, else
    the parent's request id (a hint; the engine may recompute)."""
    if request_id is not None and hasattr(engine, "fork") and engine.fork(request_id, child_ids):
        return list(child_ids)
    return [request_id] * len(child_ids)
