"""The records every stage shares. Defined once here; stages hand these to each other and nothing else.

    Problem ──rollout──▶ Trajectory (tokens, loss mask, behaviour log-probs, segments, tool calls)
            ──reward───▶ Trajectory.reward / reward_components / answer / correct filled in
            ──collate──▶ TrainBatch (padded tensors) ──algos──▶ advantages ──learner──▶ update

Trajectory invariants (checked by `Trajectory.validate`, relied on everywhere downstream):
  * len(loss_mask) == len(logprobs) == len(raw_logprobs) == len(response_ids).
  * loss_mask[i] == 1 exactly when response_ids[i] was sampled by the policy; 0 for tokens the rollout inserted
    (tool output blocks, budget messages). The rollout is the only producer of the mask; nothing recomputes it.
  * logprobs[i] is the behaviour log-prob of the sampled token under the distribution actually sampled from (after
    temperature / top-p / top-k); raw_logprobs[i] is the model's untempered log-prob. Both are 0.0 where loss_mask is 0.
  * segments tile the response in order without gaps: segment k ends where k+1 starts, the last ends at
    len(response_ids); kind 'model' segments are all mask 1, kind 'tool' segments all mask 0.
  * each executed ToolCall has an `output_segment` index pointing at the 'tool' segment holding its output block;
    calls beyond the budget have executed=False and status 'skipped'.
  * full sequence = prompt_ids ‖ response_ids; response_text is decode(response_ids) for humans only — it is never
    re-encoded.
  * tree_path is [] (a rollout that records no tree ids) or [root, *child indices] (a tree rollout's leaf; [root]
    when it never branched), unique within its group. Rows of one group whose paths are equal but for the last index
    are siblings: they forked at one branch point and share the response up to it (`sibling_group_ids`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal, Sequence

if TYPE_CHECKING:   # annotations only: this leaf module imports torch lazily (inside collate)
    import torch

ExecStatus = Literal["ok", "error", "timeout", "oom", "killed", "sandbox_error"]
EXEC_STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "oom", "killed", "sandbox_error")
ToolCallStatus = Literal["ok", "error", "timeout", "oom", "killed", "sandbox_error", "skipped"]
FinishReason = Literal["eos", "stop", "length"]
FINISH_REASONS: tuple[str, ...] = ("eos", "stop", "length")
SegmentKind = Literal["model", "tool"]


class RecordError(ValueError):
    """A record (row of a JSONL file) that does not fit its schema; the message names file, line and field."""


@dataclass
class Problem:
    """One math problem. `prompt` is the problem text only; the rollout's template wraps it."""

    id: str
    prompt: str
    answer: str
    """Gold final answer (LaTeX allowed), compared by the reward's verifier."""
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    """Extra fields of the source row (level, subject, ...)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Problem":
        return cls(id=str(d["id"]), prompt=d["prompt"], answer=str(d["answer"]), source=d.get("source", ""),
                   meta=dict(d.get("meta", {})))


@dataclass
class ExecResult:
    """Outcome of one sandboxed execution. `sandbox_error` is an infrastructure failure, never the code's fault."""

    status: ExecStatus
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    signal: int | None = None
    truncated: bool = False
    """The output cap was hit; stdout/stderr hold the first bytes."""
    duration_s: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ExecResult":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclass
class Segment:
    """A span [start, end) of response token positions produced by one actor: the model or the tool."""

    kind: SegmentKind
    start: int
    end: int


@dataclass
class ToolCall:
    """One code block the model wrote, and what happened to it."""

    code: str
    status: ToolCallStatus
    """ExecResult status, or 'skipped' when the tool budget was spent and the code was not run."""
    output: str = ""
    """Text inserted into the response (inside the output block), after truncation."""
    executed: bool = True
    duration_s: float = 0.0
    output_tokens: int = 0
    """Tokens inserted for this call (the whole output block)."""
    truncated: bool = False
    """Output was cut to rollout.max_tool_output_tokens (a visible marker says so)."""
    output_segment: int | None = None
    """Index into Trajectory.segments of the tool segment holding this call's output block."""


@dataclass
class Trajectory:
    """One sampled response to one problem, with everything needed to score, train on and inspect it."""

    problem_id: str
    prompt_ids: list[int]
    response_ids: list[int]
    loss_mask: list[int]
    logprobs: list[float]
    raw_logprobs: list[float] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason = "eos"
    prompt_text: str = ""
    response_text: str = ""
    gold_answer: str = ""
    group_id: int = 0
    """Trajectories sampled from the same prompt in the same step share a group id."""
    sample_index: int = 0
    tree_path: list[int] = field(default_factory=list)
    """Tree rollouts: [root chain, child index at each branch point] (`rollout.tree.LeafInfo.tree_path`); [] when
    the rollout records none. Collate turns it into `TrainBatch.branch_ids`."""
    policy_version: int = 0
    """Learner step whose weights generated this trajectory (staleness = current version - this)."""
    sandbox_error: bool = False
    """Some tool call failed for infrastructure reasons; training drops such trajectories by default."""
    reward: float = 0.0
    reward_components: dict[str, float] = field(default_factory=dict)
    answer: str | None = None
    """Final answer extracted from the response (None when there is none)."""
    correct: bool = False

    # ---- derived counts (not stored) ----
    @property
    def num_tool_calls(self) -> int:
        """Executed tool calls."""
        return sum(1 for c in self.tool_calls if c.executed)

    @property
    def num_sampled_tokens(self) -> int:
        return sum(self.loss_mask)

    @property
    def num_tool_tokens(self) -> int:
        return len(self.loss_mask) - sum(self.loss_mask)

    def validate(self) -> None:
        """Raise AssertionError if an invariant of the module docstring is broken."""
        n = len(self.response_ids)
        assert len(self.loss_mask) == n, f"loss_mask length {len(self.loss_mask)} != response length {n}"
        assert len(self.logprobs) == n, f"logprobs length {len(self.logprobs)} != response length {n}"
        assert not self.raw_logprobs or len(self.raw_logprobs) == n, "raw_logprobs length != response length"
        assert set(self.loss_mask) <= {0, 1}, "loss_mask must be 0/1"
        pos = 0
        for k, s in enumerate(self.segments):
            assert s.start == pos and s.end >= s.start, f"segment {k} [{s.start},{s.end}) does not continue at {pos}"
            want = 1 if s.kind == "model" else 0
            assert all(m == want for m in self.loss_mask[s.start:s.end]), f"segment {k} ({s.kind}) has wrong mask"
            pos = s.end
        assert not self.segments or pos == n, f"segments end at {pos}, response has {n} tokens"
        for i, (m, lp) in enumerate(zip(self.loss_mask, self.logprobs)):
            assert m == 1 or lp == 0.0, f"inserted token {i} carries a log-prob"
        assert all(isinstance(i, int) and i >= 0 for i in self.tree_path), f"tree_path {self.tree_path} not indices"
        for c in self.tool_calls:
            if c.executed:
                assert c.output_segment is not None and self.segments[c.output_segment].kind == "tool"
            else:
                assert c.status == "skipped"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Trajectory":
        d = dict(d)
        d["segments"] = [Segment(**s) for s in d.get("segments", [])]
        d["tool_calls"] = [ToolCall(**c) for c in d.get("tool_calls", [])]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise RecordError(f"unknown Trajectory field(s): {sorted(unknown)}")
        return cls(**d)


# ------------------------------------------------------------------------------------------------ JSONL


def write_jsonl(path: str | Path, records: Iterable[Any], append: bool = False) -> int:
    """Write records (dataclasses with to_dict, or dicts) one JSON object per line; returns the count."""
    n = 0
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_dict() if hasattr(r, "to_dict") else r, ensure_ascii=False) + "\n")
            n += 1
    return n


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; a bad line raises RecordError naming file:line."""
    p = Path(path)
    if not p.is_file():
        raise RecordError(f"{path}: file not found")
    with open(p, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RecordError(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise RecordError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_trajectories(path: str | Path) -> list[Trajectory]:
    out = []
    for lineno, obj in iter_jsonl(path):
        try:
            out.append(Trajectory.from_dict(obj))
        except (TypeError, KeyError, RecordError) as e:
            raise RecordError(f"{path}:{lineno}: not a Trajectory ({e})") from None
    return out


# ------------------------------------------------------------------------------------------- learner batch


def sibling_group_ids(rows: Iterable[tuple[int, Sequence[int]]]) -> list[int]:
    """Dense id (0, 1, ... by first appearance) per row of its sibling group, from (group_id, tree_path): rows with
    the same group and the same tree path but the last index forked at one branch point and share an id; a row whose
    path has no branch (len(tree_path) <= 1) is a group of its own. The one definition of the rule (the tree rollout's
    `sibling_ids` and `collate` both use it): [(0,[0,0]), (0,[0,1]), (0,[1]), (1,[0,0])] → [0, 0, 1, 2]."""
    ids: dict[tuple, int] = {}
    out = []
    for row, (group, path) in enumerate(rows):
        key = (group, tuple(path[:-1])) if len(path) > 1 else ("row", row)
        out.append(ids.setdefault(key, len(ids)))
    return out


@dataclass
class TrainBatch:
    """What the learner consumes: B trajectories as padded torch tensors. Shapes and dtypes:

    prompt_ids         [B, P] long   prompts, LEFT-padded with pad_id (so every response starts at column P)
    prompt_mask        [B, P] long   1 on real prompt tokens
    response_ids       [B, R] long   responses, RIGHT-padded with pad_id
    response_mask      [B, R] long   1 on real response tokens (sampled or inserted) — attention
    loss_mask          [B, R] float  1 on sampled tokens only (copied from Trajectory.loss_mask, never recomputed)
    behaviour_logprobs [B, R] float  log-probs recorded at rollout under the distribution sampled from (0 where
                                     loss_mask is 0)
    rewards            [B]    float  scalar outcome reward per trajectory
    group_ids          [B]    long   prompt group (for group baselines)
    branch_ids         [B]    long   sibling group in a tree rollout (`sibling_group_ids` of group and tree path);
                                     a row that never branched has an id of its own. collate always fills it; None
                                     only in a batch built by hand
    policy_version     [B]    long   learner version that generated each row

    Filled in by the update phase (`train.update.prepare_batch`), each once, before any optimizer step:
    ref_logprobs       [B, R] float  reference-policy log-probs (only when a KL term is used)
    values             [B, R] float  critic values at rollout time (GAE only)
    advantages         [B, R] float  from `algos.advantages.compute_advantages`
    returns            [B, R] float  value targets (read by GAE's critic loss)
    proximal_logprobs  [B, R] float  the learner's own log-probs before the first optimizer step of an off-policy
                                     batch (`train.update.off_policy`); None when the batch is on-policy

    No field changes meaning during an update: the rollout's log-probs are always `behaviour_logprobs`, the learner's
    recomputed ones always `proximal_logprobs`. Build a filled-in batch with `replace`, not by assigning fields.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    loss_mask: torch.Tensor
    behaviour_logprobs: torch.Tensor
    rewards: torch.Tensor
    group_ids: torch.Tensor
    policy_version: torch.Tensor
    branch_ids: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    values: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    proximal_logprobs: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.response_ids.shape[0])

    @property
    def old_logprobs(self) -> torch.Tensor:
        """The log-probs PPO's ratio is taken against: proximal when the learner recomputed them, else behaviour."""
        return self.behaviour_logprobs if self.proximal_logprobs is None else self.proximal_logprobs

    def replace(self, **fields: Any) -> "TrainBatch":
        """A copy with `fields` set (tensors are shared, not copied)."""
        return dataclasses.replace(self, **fields)

    def select(self, idx: Any) -> "TrainBatch":
        """Rows `idx` (a list or a LongTensor) of every tensor field, as a new batch."""
        return TrainBatch(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[idx])
                             for f in dataclasses.fields(self)})

    def to(self, device: Any) -> "TrainBatch":
        return TrainBatch(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device))
                             for f in dataclasses.fields(self)})


def collate(trajectories: list[Trajectory], pad_id: int) -> TrainBatch:
    """Pad trajectories into a TrainBatch. The loss mask and log-probs are copied, never recomputed."""
    import torch

    if not trajectories:
        raise ValueError("collate: no trajectories")
    b = len(trajectories)
    p = max(len(t.prompt_ids) for t in trajectories)
    r = max(max(len(t.response_ids) for t in trajectories), 1)
    prompt_ids = torch.full((b, p), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((b, p), dtype=torch.long)
    response_ids = torch.full((b, r), pad_id, dtype=torch.long)
    response_mask = torch.zeros((b, r), dtype=torch.long)
    loss_mask = torch.zeros((b, r), dtype=torch.float32)
    behaviour = torch.zeros((b, r), dtype=torch.float32)
    for i, t in enumerate(trajectories):
        lp, lr = len(t.prompt_ids), len(t.response_ids)
        if lp:
            prompt_ids[i, p - lp:] = torch.tensor(t.prompt_ids)
            prompt_mask[i, p - lp:] = 1
        if lr:
            response_ids[i, :lr] = torch.tensor(t.response_ids)
            response_mask[i, :lr] = 1
            loss_mask[i, :lr] = torch.tensor(t.loss_mask, dtype=torch.float32)
            behaviour[i, :lr] = torch.tensor(t.logprobs, dtype=torch.float32)
    return TrainBatch(
        prompt_ids=prompt_ids, prompt_mask=prompt_mask, response_ids=response_ids, response_mask=response_mask,
        loss_mask=loss_mask, behaviour_logprobs=behaviour,
        rewards=torch.tensor([t.reward for t in trajectories], dtype=torch.float32),
        group_ids=torch.tensor([t.group_id for t in trajectories], dtype=torch.long),
        policy_version=torch.tensor([t.policy_version for t in trajectories], dtype=torch.long),
        branch_ids=torch.tensor(sibling_group_ids([(t.group_id, t.tree_path) for t in trajectories]),
                                dtype=torch.long),
    )
