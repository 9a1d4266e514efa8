"""The tool-integrated rollout: sample, run each python block in the trajectory's sandbox session, insert its output,
continue — for many trajectories at once, tools overlapped with generation.

    trajs = rollout(problems, engine, sandbox, cfg.rollout, n_samples=8, max_tool_calls=2, policy_version=3)

Each trajectory is an asyncio task. Generation requests go to one engine pump (continuous batching: the engine
decodes every active request together); a trajectory that wrote a python block leaves the batch, awaits
`session.arun(code)` in the sandbox's processes while the others keep decoding, then rejoins with the output block
appended (the engine reuses its KV cache via `prefix_of`).

Exactness (the invariants of `zerotir.types.Trajectory`):
  * token-in/token-out: sampled token ids are appended as sampled, never decoded and re-encoded; an inserted block is
    tokenized on its own (`tokenize_block`) and appended with mask 0 and log-probs 0.0.
  * one token budget: each request may sample at most min(max_new_tokens_per_turn, room left); an output block is
    cut (by tokens, with TRUNCATION_MARKER) to max_tool_output_tokens and to the room left; a block with no room at all
    is not run. The response never exceeds max_total_tokens; reaching it (or the per-turn limit) ends with 'length'.
  * calls beyond `max_tool_calls` are not run: status 'skipped', the budget message is inserted (or, if the message
    is '', the trajectory stops).
  * a sandbox infrastructure failure (status 'sandbox_error') is never shown to the model: the trajectory ends there,
    the call gets an empty tool segment, and `trajectory.sandbox_error` is set so training can drop it.

Tree rollouts (`rollout.branch_factor` > 1): after a tool output a trajectory may fork into K children that copy its
builder (tokens, mask, log-probs, segments, calls, counters) and continue on their own; `zerotir.rollout.tree`
decides where and how many, and says what the children share. Every leaf is a complete Trajectory with the
invariants above; `rollout_tree` also returns each leaf's position in its tree.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

from zerotir.config import RolloutConfig
from zerotir.rollout import tree
from zerotir.rollout.engine import REJOIN_LAG_STEPS, EnginePump, GenerationRequest, SamplingParams, fork_id
from zerotir.rollout.format import CODE_CLOSE
from zerotir.rollout.templates import encode_prompt
from zerotir.rollout.textstream import find_code_block
from zerotir.rollout.toolblock import Block, encode_text, marker_tokens, min_block_tokens, render_result, tokenize_block
from zerotir.rollout.tree import LeafInfo
from zerotir.sandbox.protocol import SandboxLike, SessionLike
from zerotir.types import ExecResult, Problem, Segment, ToolCall, Trajectory

__all__ = ["rollout", "arollout", "rollout_tree", "arollout_tree", "TreeRollout", "check_budgets", "Block",
           "encode_text", "marker_tokens", "min_block_tokens", "render_result", "tokenize_block"]


# ------------------------------------------------------------------------------------------ one trajectory


def _request_seed(seed: int | None, group_id: int, sample_index: int, turn: int | str,
                  path: tuple[int, ...] = ()) -> int | None:
    if seed is None:
        return None
    key = f"{seed}/{group_id}/{sample_index}/{turn}" + (f"/{'.'.join(map(str, path))}" if path else "")
    h = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


async def _execute(sandbox: SandboxLike, session: SessionLike | None, code: str) -> ExecResult:
    """Run code; anything the sandbox raises is an infrastructure failure, reported as 'sandbox_error'."""
    target = session if session is not None else sandbox
    try:
        if hasattr(target, "arun"):
            r = await target.arun(code)
        else:
            r = await asyncio.to_thread(target.run, code)
    except Exception as e:  # noqa: BLE001 — never let a sandbox failure kill the rollout
        return ExecResult(status="sandbox_error", stderr=f"{type(e).__name__}: {e}")
    if not isinstance(r, ExecResult):
        return ExecResult(status="sandbox_error", stderr=f"sandbox returned {type(r).__name__}")
    return r


@dataclass
class _Builder:
    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    lps: list[float] = field(default_factory=list)
    raws: list[float] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)

    def add(self, kind: str, ids: list[int], lps: list[float] | None = None, raws: list[float] | None = None) -> int:
        """Append tokens as a segment of `kind` (merged into the previous segment of the same kind); returns its
        segment index."""
        start = len(self.ids)
        self.ids += ids
        if kind == "model":
            self.mask += [1] * len(ids)
            self.lps += list(lps)
            self.raws += list(raws)
        else:
            self.mask += [0] * len(ids)
            self.lps += [0.0] * len(ids)
            self.raws += [0.0] * len(ids)
        if kind == "model" and self.segments and self.segments[-1].kind == "model":
            self.segments[-1].end = len(self.ids)
        else:
            self.segments.append(Segment(kind, start, len(self.ids)))
        return len(self.segments) - 1

    def copy(self) -> "_Builder":
        """An independent copy (a branch's child: `add` extends the last segment in place, so segments are new)."""
        return _Builder(list(self.ids), list(self.mask), list(self.lps), list(self.raws),
                        [Segment(s.kind, s.start, s.end) for s in self.segments])


@dataclass
class _Walk:
    """One trajectory in progress (a node of a tree rollout): what a branch point copies into each child."""

    b: _Builder = field(default_factory=_Builder)
    calls: list[ToolCall] = field(default_factory=list)
    executed: int = 0
    session: Any = None
    turn: int = 0
    prev_req: str | None = None
    turn_start: int = 0
    """Response index where the current model turn (since the last inserted block) begins."""
    path: tuple[int, ...] = ()
    branch_points: tuple[int, ...] = ()
    budget: int = 1
    """Leaves this node may still end in (tree.root_budget at the root)."""

    def child(self, index: int, session: Any, budget: int) -> "_Walk":
        return _Walk(self.b.copy(), [dataclasses.replace(c) for c in self.calls], self.executed, session, self.turn,
                     self.prev_req, self.turn_start, self.path + (index,), self.branch_points + (len(self.b.ids),),
                     budget)


@dataclass
class _Root:
    """What every node of one root chain shares."""

    pump: EnginePump
    sandbox: SandboxLike
    cfg: RolloutConfig
    problem: Problem
    prompt_text: str
    prompt_ids: list[int]
    group_id: int
    root: int
    max_tool_calls: int
    seed: int | None
    policy_version: int


def _request(x: _Root, w: _Walk, room: int, prefix_of: str | None, probe: bool = False) -> GenerationRequest:
    cfg = x.cfg
    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                            max_new_tokens=1 if probe else min(cfg.max_new_tokens_per_turn, room),
                            stop_strings=list(cfg.stop_strings), stop_at_code_block=True, park=probe,
                            return_entropy=probe,
                            seed=_request_seed(x.seed, x.group_id, x.root, f"{w.turn}probe" if probe else w.turn,
                                               w.path))
    path = ".".join(map(str, w.path))
    rid = f"g{x.group_id}-s{x.root}-p{path}-t{w.turn}{'-probe' if probe else ''}-{id(w.b)}"
    return GenerationRequest(rid, x.prompt_ids + w.b.ids, params, prefix_of=prefix_of)


async def _branch(x: _Root, w: _Walk) -> list[tuple[Trajectory, LeafInfo]] | None:
    """After a tool output: fork `w` into the children `tree` allows here, run them, return their leaves; None when
    `w` does not branch here. The children's first requests are submitted together (one engine step)."""
    room = x.cfg.max_total_tokens - len(w.b.ids)
    k = tree.children(x.cfg, len(w.path), w.budget, room)
    if k < 2:
        return None
    if x.cfg.branch_at == "entropy":
        out = await x.pump.generate(_request(x, w, room, w.prev_req, probe=True))
        w.prev_req = out.request_id  # the probe parked the whole context's cache: the continuation(s) start there
        if not tree.entropy_gate(out, x.cfg.branch_entropy_threshold):
            return None
    sessions = await tree.fork_sessions(w.session, k)
    kids = [w.child(i, s, n) for i, (s, n) in enumerate(zip(sessions, tree.split_budget(w.budget, k)))]
    prefix = tree.fork_cache(x.pump.engine, w.prev_req, [fork_id(w.prev_req, i) for i in range(k)])
    w.session = w.prev_req = None  # handed to the children (they close / release them)
    firsts = [(req.request_id, x.pump.submit(req)) for req in
              (_request(x, kid, room, pre) for kid, pre in zip(kids, prefix))]
    parts = await asyncio.gather(*(_grow(x, kid, first) for kid, first in zip(kids, firsts)))
    return [leaf for part in parts for leaf in part]


async def _grow(x: _Root, w: _Walk, first: tuple[str, asyncio.Future] | None = None
                ) -> list[tuple[Trajectory, LeafInfo]]:
    """Run one trajectory (a tree node) to its end, or to a branch point (then its children's leaves)."""
    cfg = x.cfg
    engine = x.pump.engine
    tok = engine.tokenizer
    min_block = min_block_tokens(tok)
    b, calls = w.b, w.calls
    sandbox_error = False
    finish = None
    try:
        while finish is None:
            room = cfg.max_total_tokens - len(b.ids)
            if room <= 0:
                finish = "length"
                break
            if first is None:
                req = _request(x, w, room, w.prev_req)
                rid, out = req.request_id, await x.pump.generate(req)
            else:  # a branch child: its first request was submitted with its siblings'
                (rid, fut), first = first, None
                out = await fut
            w.prev_req, w.turn = rid, w.turn + 1
            b.add("model", list(out.token_ids), out.logprobs, out.raw_logprobs)
            if out.finish_reason == "eos":
                finish = "eos"
                break
            block = None
            if out.finish_reason == "stop" and out.stop_string == CODE_CLOSE:
                turn_text = tok.decode(b.ids[w.turn_start:], skip_special_tokens=False)
                block = find_code_block(turn_text)
            if block is None:
                if out.finish_reason == "length":
                    finish = "length"
                elif out.stop_string in cfg.stop_strings:
                    finish = "stop"
                # else: a close fence that ends no python block (engine without stop_at_code_block): keep sampling
                continue
            code = block[0]
            room = cfg.max_total_tokens - len(b.ids)
            if w.executed >= x.max_tool_calls:
                msg = cfg.tool_budget_message
                if not msg:
                    calls.append(ToolCall(code=code, status="skipped", executed=False))
                    finish = "stop"
                    break
                blk = tokenize_block(tok, msg, cfg.max_tool_output_tokens, room)
                if blk is None:
                    calls.append(ToolCall(code=code, status="skipped", executed=False))
                    finish = "length"
                    break
                seg = b.add("tool", blk.ids)
                calls.append(ToolCall(code=code, status="skipped", output=blk.shown, executed=False,
                                      output_tokens=len(blk.ids), truncated=blk.truncated, output_segment=seg))
                w.turn_start = len(b.ids)
                continue
            if min_block > room:
                finish = "length"  # no room left for any output block: the code is not run
                break
            if cfg.stateful_tools and w.session is None:
                w.session = x.sandbox.session()
            result = await _execute(x.sandbox, w.session if cfg.stateful_tools else None, code)
            w.executed += 1
            if result.status == "sandbox_error":
                seg = b.add("tool", [])
                calls.append(ToolCall(code=code, status="sandbox_error", output="", executed=True,
                                      duration_s=result.duration_s, output_segment=seg))
                sandbox_error = True
                finish = "stop"
                break
            blk = tokenize_block(tok, render_result(result), cfg.max_tool_output_tokens, room,
                                 force_marker=result.truncated)
            seg = b.add("tool", blk.ids)
            calls.append(ToolCall(code=code, status=result.status, output=blk.shown, executed=True,
                                  duration_s=result.duration_s, output_tokens=len(blk.ids),
                                  truncated=blk.truncated, output_segment=seg))
            w.turn_start = len(b.ids)
            leaves = await _branch(x, w)
            if leaves is not None:
                return leaves
    finally:
        if w.session is not None:
            try:
                await asyncio.to_thread(w.session.close)  # closing may block on the sandbox; keep decoding
            except Exception:  # noqa: BLE001 — closing a dead session must not lose the trajectory
                pass
        if w.prev_req is not None:
            x.pump.release(w.prev_req)  # frees its cache; in lockstep, the pump stops waiting for this trajectory
    traj = Trajectory(
        problem_id=x.problem.id, prompt_ids=list(x.prompt_ids), response_ids=b.ids, loss_mask=b.mask,
        logprobs=b.lps, raw_logprobs=b.raws, segments=b.segments, tool_calls=calls, finish_reason=finish,
        prompt_text=x.prompt_text, response_text=tok.decode(b.ids, skip_special_tokens=True),
        gold_answer=x.problem.answer, group_id=x.group_id, sample_index=x.root, policy_version=x.policy_version,
        sandbox_error=sandbox_error)
    traj.validate()
    return [(traj, tree.LeafInfo(x.group_id, x.root, w.path, w.branch_points))]


# ------------------------------------------------------------------------------------------ entry points


def check_budgets(cfg: RolloutConfig, tokenizer: Any, max_tool_calls: int) -> None:
    """Reject budgets that cannot work, naming the field."""
    if cfg.max_total_tokens < 1:
        raise ValueError(f"rollout.max_total_tokens must be >= 1, got {cfg.max_total_tokens}")
    if cfg.max_new_tokens_per_turn < 1:
        raise ValueError(f"rollout.max_new_tokens_per_turn must be >= 1, got {cfg.max_new_tokens_per_turn}")
    if max_tool_calls < 0:
        raise ValueError(f"max_tool_calls must be >= 0, got {max_tool_calls}")
    tree.check_branching(cfg)
    need = marker_tokens(tokenizer)
    if cfg.max_tool_output_tokens < need:
        raise ValueError(f"rollout.max_tool_output_tokens={cfg.max_tool_output_tokens} is smaller than the truncation "
                         f"marker ({need} tokens)")


def _warn_positions(engine: Any, problems: list[Problem], cfg: RolloutConfig, tok: Any) -> None:
    """Warn once per call when prompt + max_total_tokens can exceed the model's trained context length."""
    limit = getattr(getattr(getattr(engine, "model", None), "config", None), "max_position_embeddings", None)
    if not limit or not problems:
        return
    longest = max(len(encode_prompt(cfg.template, p.prompt, tok)[1]) for p in problems[:64])
    if longest + cfg.max_total_tokens > limit:
        from zerotir.telemetry import get_logger

        get_logger("rollout").warning(
            "prompt (%d tokens) + rollout.max_total_tokens (%d) exceeds the model's max_position_embeddings (%d): "
            "positions past it are untrained", longest, cfg.max_total_tokens, limit)


@dataclass(frozen=True)
class TreeRollout:
    """A rollout's leaves and where each sits in its tree (`leaves[i]` describes `trajectories[i]`)."""

    trajectories: list[Trajectory]
    leaves: list[LeafInfo]


async def arollout(problems: list[Problem], engine: Any, sandbox: SandboxLike, cfg: RolloutConfig, *, n_samples: int,
                   max_tool_calls: int, policy_version: int | None = None, group_offset: int = 0,
                   seed: int | None = None, progress: Any = None) -> list[Trajectory]:
    """Async form of `rollout` (for callers already inside an event loop)."""
    res = await arollout_tree(problems, engine, sandbox, cfg, n_samples=n_samples, max_tool_calls=max_tool_calls,
                              policy_version=policy_version, group_offset=group_offset, seed=seed,
                              progress=progress)
    return res.trajectories


async def arollout_tree(problems: list[Problem], engine: Any, sandbox: SandboxLike, cfg: RolloutConfig, *, n_samples: int,
                        max_tool_calls: int, policy_version: int | None = None, group_offset: int = 0,
                        seed: int | None = None, progress: Any = None) -> TreeRollout:
    """`arollout` with each leaf's tree position (`zerotir.rollout.tree`). Without branching every root is its
    own single leaf. `progress` (a `zerotir.telemetry.Progress`) counts finished roots under 'rollout' for the live
    view; nothing reads it back."""
    tok = engine.tokenizer
    check_budgets(cfg, tok, max_tool_calls)
    _warn_positions(engine, problems, cfg, tok)
    version = engine.policy_version if policy_version is None else policy_version
    pump = EnginePump(engine, lag=REJOIN_LAG_STEPS if cfg.deterministic else 0)
    pump_task = asyncio.create_task(pump.run())
    tasks = []
    for gi, p in enumerate(problems):
        text, ids = encode_prompt(cfg.template, p.prompt, tok)
        for si in range(n_samples):
            root = _Root(pump, sandbox, cfg, p, text, ids, group_offset + gi, si, max_tool_calls, seed, version)
            tasks.append(asyncio.create_task(_grow(root, _Walk(budget=tree.root_budget(cfg)))))
            if progress is not None:
                tasks[-1].add_done_callback(lambda _: progress.advance("rollout"))
    try:
        done = asyncio.gather(*tasks)
        finished, _ = await asyncio.wait({done, pump_task}, return_when=asyncio.FIRST_COMPLETED)
        if pump_task in finished:
            for t in tasks:
                t.cancel()
            pump_task.result()  # raises the engine's error
            raise RuntimeError("engine pump stopped before the rollout finished")
        return _number_leaves([leaf for part in done.result() for leaf in part])
    finally:
        pump.close()
        if not pump_task.done():
            await pump_task
        for rid in list(pump.futures):  # after a failure: leave no orphaned requests decoding in the engine
            engine.abort(rid)


def _number_leaves(leaves: list[tuple[Trajectory, LeafInfo]]) -> TreeRollout:
    """sample_index = the leaf's place in its group (root-major, then by path; = the root index without branching);
    tree_path = (root, *path), which `collate` turns into sibling groups."""
    seen: dict[int, int] = {}
    for t, info in leaves:
        t.sample_index = seen.get(t.group_id, 0)
        seen[t.group_id] = t.sample_index + 1
        t.tree_path = list(info.tree_path)
    return TreeRollout([t for t, _ in leaves], [info for _, info in leaves])


def rollout(problems: list[Problem], engine: Any, sandbox: SandboxLike, cfg: RolloutConfig, *, n_samples: int,
            max_tool_calls: int, policy_version: int | None = None, group_offset: int = 0,
            seed: int | None = None, progress: Any = None) -> list[Trajectory]:
    """Sample `n_samples` trajectories per problem (problem-major order) — with branching, their leaves (up to
    n_samples·branch_max_leaves per problem). group_id = group_offset + problem index, sample_index = index within
    the group. Reward fields are left at their defaults. `seed` makes sampling
    reproducible (each request's RNG is derived from (seed, group, sample, turn)); None uses the engine's RNG."""
    return asyncio.run(arollout(problems, engine, sandbox, cfg, n_samples=n_samples, max_tool_calls=max_tool_calls,
                                policy_version=policy_version, group_offset=group_offset, seed=seed,
                                progress=progress))


def rollout_tree(problems: list[Problem], engine: Any, sandbox: SandboxLike, cfg: RolloutConfig, *, n_samples: int,
                 max_tool_calls: int, policy_version: int | None = None, group_offset: int = 0,
                 seed: int | None = None) -> TreeRollout:
    """`rollout` with each leaf's tree position (`TreeRollout.leaves`)."""
    return asyncio.run(arollout_tree(problems, engine, sandbox, cfg, n_samples=n_samples,
                                     max_tool_calls=max_tool_calls, policy_version=policy_version,
                                     group_offset=group_offset, seed=seed))
