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
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

from zerotir.config import RolloutConfig
from zerotir.rollout.engine import GenerationOutput, GenerationRequest, SamplingParams
from zerotir.rollout.format import CODE_CLOSE, TRUNCATION_MARKER, format_tool_output
from zerotir.rollout.templates import encode_prompt
from zerotir.rollout.textstream import find_code_block
from zerotir.types import ExecResult, Problem, Segment, ToolCall, Trajectory


# ------------------------------------------------------------------------------------------ tool output text


def render_result(r: ExecResult) -> str:
    """What the model sees for an executed call (never called for 'sandbox_error')."""
    text = r.stdout
    if r.status != "ok" and r.stderr:
        text += ("" if not text or text.endswith("\n") else "\n") + r.stderr
    sep = "" if not text or text.endswith("\n") else "\n"
    if r.status == "timeout":
        text += sep + "TimeoutError: execution timed out"
    elif r.status == "oom":
        text += sep + "MemoryError: out of memory"
    elif r.status == "killed":
        text += sep + f"Killed (signal {r.signal})" if r.signal is not None else sep + "Killed"
    return text


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """`tokenizer.encode(text, add_special_tokens=False)`; fast tokenizers via their Rust backend directly (the same
    ids without the Python wrapper, which costs more than the encoding of a short tool output)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.encode(text, add_special_tokens=False).ids
    return list(tokenizer.encode(text, add_special_tokens=False))


def min_block_tokens(tokenizer: Any) -> int:
    """Tokens of the smallest output block (the truncation marker alone): with less room left, code is not run."""
    return len(encode_text(tokenizer, format_tool_output(TRUNCATION_MARKER)))


@dataclass
class Block:
    ids: list[int]
    """Token ids of the whole inserted block (OUTPUT_OPEN … OUTPUT_CLOSE)."""
    shown: str
    """The output text inside the block (after truncation, with the marker if cut)."""
    truncated: bool


def tokenize_block(tokenizer: Any, output: str, max_output_tokens: int, max_block_tokens: int,
                   force_marker: bool = False) -> Block | None:
    """Tokenize `format_tool_output(shown)` on its own, where `shown` is `output` cut so that its own tokens (marker
    included) are at most `max_output_tokens` and the whole block is at most `max_block_tokens`. When cut (or
    `force_marker`, e.g. the sandbox already capped the bytes) `shown` ends with TRUNCATION_MARKER.
    Returns None when even a block holding only the marker does not fit `max_block_tokens`."""
    shown = output.rstrip("\n")
    if not force_marker:
        ids = encode_text(tokenizer, shown)
        if len(ids) <= max_output_tokens:
            block = encode_text(tokenizer, format_tool_output(shown))
            if len(block) <= max_block_tokens:
                return Block(block, shown, False)
    ids = encode_text(tokenizer, shown)
    k = min(len(ids), max_output_tokens)
    while True:
        # decode(ids[:k]) may end in half a character: drop it rather than show a replacement char
        cut = tokenizer.decode(ids[:k], skip_special_tokens=True).rstrip("\ufffd") if k > 0 else ""
        cand = cut + TRUNCATION_MARKER
        n_out = len(encode_text(tokenizer, cand))
        block = encode_text(tokenizer, format_tool_output(cand))
        over = max(n_out - max_output_tokens, len(block) - max_block_tokens)
        if over <= 0:
            return Block(block, cand.rstrip("\n"), True)
        if k == 0:
            return None
        k = max(0, k - over)


def marker_tokens(tokenizer: Any) -> int:
    return len(encode_text(tokenizer, TRUNCATION_MARKER))


# ------------------------------------------------------------------------------------------ engine pump


class EnginePump:
    """Drives a step-wise Engine from asyncio: `await pump.generate(req)` resolves when the request finishes."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.futures: dict[str, asyncio.Future] = {}
        self.wake = asyncio.Event()
        self.closed = False

    async def generate(self, req: GenerationRequest) -> GenerationOutput:
        fut = asyncio.get_running_loop().create_future()
        self.futures[req.request_id] = fut
        self.engine.add_request(req)
        self.wake.set()
        return await fut

    async def run(self) -> None:
        while not self.closed:
            if self.engine.has_unfinished():
                try:
                    outs = self.engine.step()
                except BaseException as e:  # surface engine failures in every waiting trajectory
                    for f in self.futures.values():
                        if not f.done():
                            f.set_exception(e)
                    self.futures.clear()
                    raise
                for out in outs:
                    fut = self.futures.pop(out.request_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(out)
                await asyncio.sleep(0)  # let finished sandbox calls and new requests in
            else:
                self.wake.clear()
                await self.wake.wait()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


# ------------------------------------------------------------------------------------------ one trajectory


def _request_seed(seed: int | None, group_id: int, sample_index: int, turn: int) -> int | None:
    if seed is None:
        return None
    h = hashlib.blake2b(f"{seed}/{group_id}/{sample_index}/{turn}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


async def _execute(sandbox: Any, session: Any, code: str) -> ExecResult:
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


async def _one_trajectory(pump: EnginePump, sandbox: Any, cfg: RolloutConfig, problem: Problem, prompt_text: str,
                          prompt_ids: list[int], group_id: int, sample_index: int, max_tool_calls: int,
                          seed: int | None, policy_version: int) -> Trajectory:
    engine = pump.engine
    tok = engine.tokenizer
    min_block = min_block_tokens(tok)
    b = _Builder()
    calls: list[ToolCall] = []
    executed = 0
    session = None
    sandbox_error = False
    finish = None
    turn = 0
    prev_req: str | None = None
    turn_start = 0  # response index where the current model turn (since the last inserted block) begins
    try:
        while finish is None:
            room = cfg.max_total_tokens - len(b.ids)
            if room <= 0:
                finish = "length"
                break
            params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                                    max_new_tokens=min(cfg.max_new_tokens_per_turn, room),
                                    stop_strings=list(cfg.stop_strings), stop_at_code_block=True,
                                    seed=_request_seed(seed, group_id, sample_index, turn))
            rid = f"g{group_id}-s{sample_index}-t{turn}-{id(b)}"
            out = await pump.generate(GenerationRequest(rid, prompt_ids + b.ids, params, prefix_of=prev_req))
            prev_req, turn = rid, turn + 1
            b.add("model", list(out.token_ids), out.logprobs, out.raw_logprobs)
            if out.finish_reason == "eos":
                finish = "eos"
                break
            block = None
            if out.finish_reason == "stop" and out.stop_string == CODE_CLOSE:
                turn_text = tok.decode(b.ids[turn_start:], skip_special_tokens=False)
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
            if executed >= max_tool_calls:
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
                turn_start = len(b.ids)
                continue
            if min_block > room:
                finish = "length"  # no room left for any output block: the code is not run
                break
            if cfg.stateful_tools and session is None:
                session = sandbox.session()
            result = await _execute(sandbox, session if cfg.stateful_tools else None, code)
            executed += 1
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
            turn_start = len(b.ids)
    finally:
        if session is not None:
            try:
                await asyncio.to_thread(session.close)  # closing may block on the sandbox; keep decoding
            except Exception:  # noqa: BLE001 — closing a dead session must not lose the trajectory
                pass
        if prev_req is not None and hasattr(engine, "release"):
            engine.release(prev_req)
    traj = Trajectory(
        problem_id=problem.id, prompt_ids=list(prompt_ids), response_ids=b.ids, loss_mask=b.mask, logprobs=b.lps,
        raw_logprobs=b.raws, segments=b.segments, tool_calls=calls, finish_reason=finish, prompt_text=prompt_text,
        response_text=tok.decode(b.ids, skip_special_tokens=True), gold_answer=problem.answer, group_id=group_id,
        sample_index=sample_index, policy_version=policy_version, sandbox_error=sandbox_error)
    traj.validate()
    return traj


# ------------------------------------------------------------------------------------------ entry points


def check_budgets(cfg: RolloutConfig, tokenizer: Any, max_tool_calls: int) -> None:
    """Reject budgets that cannot work, naming the field."""
    if cfg.max_total_tokens < 1:
        raise ValueError(f"rollout.max_total_tokens must be >= 1, got {cfg.max_total_tokens}")
    if cfg.max_new_tokens_per_turn < 1:
        raise ValueError(f"rollout.max_new_tokens_per_turn must be >= 1, got {cfg.max_new_tokens_per_turn}")
    if max_tool_calls < 0:
        raise ValueError(f"max_tool_calls must be >= 0, got {max_tool_calls}")
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


async def arollout(problems: list[Problem], engine: Any, sandbox: Any, cfg: RolloutConfig, *, n_samples: int,
                   max_tool_calls: int, policy_version: int | None = None, group_offset: int = 0,
                   seed: int | None = None) -> list[Trajectory]:
    """Async form of `rollout` (for callers already inside an event loop)."""
    tok = engine.tokenizer
    check_budgets(cfg, tok, max_tool_calls)
    _warn_positions(engine, problems, cfg, tok)
    version = engine.policy_version if policy_version is None else policy_version
    pump = EnginePump(engine)
    pump_task = asyncio.create_task(pump.run())
    tasks = []
    for gi, p in enumerate(problems):
        text, ids = encode_prompt(cfg.template, p.prompt, tok)
        for si in range(n_samples):
            tasks.append(asyncio.create_task(_one_trajectory(
                pump, sandbox, cfg, p, text, ids, group_offset + gi, si, max_tool_calls, seed, version)))
    try:
        done = asyncio.gather(*tasks)
        finished, _ = await asyncio.wait({done, pump_task}, return_when=asyncio.FIRST_COMPLETED)
        if pump_task in finished:
            for t in tasks:
                t.cancel()
            pump_task.result()  # raises the engine's error
            raise RuntimeError("engine pump stopped before the rollout finished")
        return done.result()
    finally:
        pump.close()
        if not pump_task.done():
            await pump_task
        for rid in list(pump.futures):  # after a failure: leave no orphaned requests decoding in the engine
            engine.abort(rid)


def rollout(problems: list[Problem], engine: Any, sandbox: Any, cfg: RolloutConfig, *, n_samples: int,
            max_tool_calls: int, policy_version: int | None = None, group_offset: int = 0,
            seed: int | None = None) -> list[Trajectory]:
    """Sample `n_samples` trajectories per problem (problem-major order). group_id = group_offset + problem index,
    sample_index = index within the group. Reward fields are left at their defaults. `seed` makes sampling
    reproducible (each request's RNG is derived from (seed, group, sample, turn)); None uses the engine's RNG."""
    return asyncio.run(arollout(problems, engine, sandbox, cfg, n_samples=n_samples, max_tool_calls=max_tool_calls,
                                policy_version=policy_version, group_offset=group_offset, seed=seed))
