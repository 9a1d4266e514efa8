"""The generation-engine contract: token ids in, token ids + per-token log-probs out.

Every engine (the HF/torch engine here, vLLM in `zerotir.distributed`) implements `Engine`. The TIR loop drives it
step-wise so that sequences can leave (to wait for a tool, or because they finished) and re-enter (with tool output
appended) while the others keep decoding — continuous batching:

    engine.add_request(GenerationRequest("traj-3/turn-1", context_ids, params))
    while engine.has_unfinished():
        for out in engine.step():          # zero or more finished requests per step
            ...                            # out.token_ids, out.logprobs, out.raw_logprobs, out.finish_reason

Optional extras an engine may offer (the TIR loop uses them when present): `release(request_id)` drops a paused
request's cached state once its trajectory ends; `fork(request_id, new_ids)` makes a paused request's cached state
the starting point of several continuations (tree rollouts: each `new_id` may then be named by one continuation's
`prefix_of`; the engine copies the cached rows instead of recomputing the prefix); `GenerationRequest.prefix_of`,
`SamplingParams.stop_at_code_block` / `park` / `return_entropy` are hints/features documented on the fields.
An engine without an extra is still correct: it recomputes what it cannot reuse.

Log-prob contract: `logprobs[i]` is log p(token_i) under the distribution actually sampled from (after temperature,
top-k, top-p renormalisation; for greedy it is the untempered log-prob); `raw_logprobs[i]` is the untempered model
log-prob log softmax(logits)[token_i]. Both have len(token_ids) entries.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class SamplingParams:
    temperature: float = 1.0
    """0 = greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """0 = off."""
    max_new_tokens: int = 256
    stop_strings: list[str] = field(default_factory=list)
    """Decoding stops right after the first sampled token whose text completes one of these (matched on the text of
    the tokens generated in this request); the stop string stays in the output."""
    stop_token_ids: list[int] = field(default_factory=list)
    """Extra token ids that end the request (EOS is always one)."""
    seed: int | None = None
    """Per-request seed for reproducible sampling (None = engine's generator)."""
    stop_at_code_block: bool = False
    """Also stop right after the token that completes the CODE_CLOSE of a python block opened in this request's
    output (zerotir.rollout.format), finish_reason 'stop' with stop_string CODE_CLOSE. Engines without it may pass
    CODE_CLOSE as a plain stop string instead: the TIR loop continues after a close that ends no python block."""
    park: bool = False
    """Keep this request's cache after it finishes for any reason (by default only a stop-string finish parks it), so
    that a continuation or `fork` can start from it. A hint."""
    return_entropy: bool = False
    """Report `GenerationOutput.entropies`: the entropy (nats) of the distribution each token was sampled from."""


@dataclass
class GenerationRequest:
    request_id: str
    context_ids: list[int]
    """Full context: prompt ‖ everything in the response so far (sampled and inserted tokens)."""
    params: SamplingParams
    prefix_of: str | None = None
    """Id of an earlier request of the same trajectory whose context ‖ output starts this context: an engine may
    reuse that request's KV cache (it checks the ids) and prefill only the rest. A hint; ignoring it is correct."""


@dataclass
class GenerationOutput:
    request_id: str
    token_ids: list[int]
    """Newly sampled tokens only."""
    logprobs: list[float]
    raw_logprobs: list[float]
    finish_reason: str
    """'eos' (EOS / stop token id), 'stop' (a stop string; see `stop_string`) or 'length' (max_new_tokens)."""
    stop_string: str | None = None
    entropies: list[float] | None = None
    """With `SamplingParams.return_entropy` (engines that support it): entropy of the sampling distribution (after
    temperature / top-k / top-p) at each sampled token; None otherwise."""


@runtime_checkable
class Engine(Protocol):
    """A generation engine. Implementations: `zerotir.rollout.hf_engine.HFEngine`,
    `zerotir.distributed.vllm_engine.VLLMEngine` (GPU)."""

    tokenizer: Any
    eos_token_id: int

    def add_request(self, request: GenerationRequest) -> None: ...

    def step(self) -> list[GenerationOutput]:
        """Advance every active request by one token (or one engine iteration); return those that finished."""
        ...

    def has_unfinished(self) -> bool: ...

    def abort(self, request_id: str) -> None: ...

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        """Convenience: run the given requests to completion; outputs in request order."""
        ...

    def update_weights(self, state_dict: dict[str, Any], version: int) -> None:
        """Load new policy weights (learner → engine sync); `version` is recorded in trajectories."""
        ...

    @property
    def policy_version(self) -> int: ...


REJOIN_LAG_STEPS = 4
"""Deterministic rollouts (`EnginePump(lag=...)`, `rollout.deterministic`): engine steps between a request's end and
its continuation's start. A tool call that takes longer stalls decoding until it is back; 4 toy decode steps
(~20-40 ms each on 2 cores) cover a typical sandbox call."""


def fork_id(request_id: str, i: int) -> str:
    """The handle of a paused request's i-th continuation (`Engine.fork`); `fork_parent` inverts it."""
    return f"{request_id}/b{i}"


def fork_parent(handle: str) -> str:
    """The request a `fork_id` handle was made from (the handle itself when it is not one)."""
    return handle.rsplit("/b", 1)[0]


class EnginePump:
    """Drives a step-wise Engine from asyncio: `await pump.generate(req)` resolves when the request finishes.
    `submit(req)` adds a request at once and returns its future: requests submitted together (the children of a
    branch point) join the same engine step, so the engine can prefill their shared context once.

    Free-running (lag 0, the default): a continuation (a request whose `prefix_of` names a finished request) joins
    the batch at the first engine step after it is submitted, i.e. when its tool output is back. Which step that is
    depends on the sandbox's timing, and with it the batch each row is decoded in; batch make-up moves log-probs at
    float rounding (~1e-7), so two runs of one seed drift apart and, over tens of RL steps, flip single samples.

    Lockstep (lag k > 0): the continuation of a request that finished at engine step t joins at step t + k exactly,
    in the order those requests finished; the pump waits before step t + k until every request that finished at t
    has been continued (a `submit` naming it, or a branch child's `fork_id` of it) or `release`d. Engine steps then
    depend on nothing but the seeds, so a seeded rollout (with a fixed thread count) is bit-reproducible; the cost is
    a stall whenever a tool call takes longer than k steps. Every trajectory must end by `release` of its last
    request (the TIR loop does, in its `finally`), or the pump waits for it forever.
    """

    def __init__(self, engine: Any, lag: int = 0):
        self.engine = engine
        self.lag = lag
        self.futures: dict[str, asyncio.Future] = {}
        self.wake = asyncio.Event()
        self.closed = False
        self.steps = 0
        """Engine steps taken (lockstep: the logical clock; it jumps over steps where nothing would decode)."""
        self._finished_at: dict[str, int] = {}    # lockstep: finished request → its step, until continued/released
        self._continued: set[str] = set()
        self._held: dict[str, list[GenerationRequest]] = {}
        self._due: dict[int, list[str]] = {}      # step → finished requests whose continuations join then, in order

    def submit(self, req: GenerationRequest) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.futures[req.request_id] = fut
        prev = self._pending(req.prefix_of)
        if prev is None:
            self.engine.add_request(req)
        else:  # lockstep: held until its step
            self._held.setdefault(prev, []).append(req)
            self._continued.add(prev)
        self.wake.set()
        return fut

    async def generate(self, req: GenerationRequest) -> GenerationOutput:
        return await self.submit(req)

    def release(self, request_id: str) -> None:
        """The trajectory of `request_id` (a finished request) ends: free the engine's cache for it (engines with
        `release`) and, in lockstep, stop waiting for its continuation."""
        if request_id in self._finished_at:
            self._continued.add(request_id)
            self.wake.set()
        if hasattr(self.engine, "release"):
            self.engine.release(request_id)

    def _pending(self, prefix_of: str | None) -> str | None:
        """Lockstep: the finished request a submission continues (itself, or the parent of a branch child's fork id);
        None when free-running or when it continues nothing the pump waits for (a new trajectory)."""
        if not self.lag or prefix_of is None:
            return None
        if prefix_of in self._finished_at:
            return prefix_of
        parent = fork_parent(prefix_of)
        return parent if parent in self._finished_at else None

    async def _admit_due(self) -> None:
        """Lockstep: before the next step, wait for the continuations due by then and add them in order."""
        nxt = self.steps + 1
        if self._due and not self.engine.has_unfinished():
            nxt = max(nxt, min(self._due))  # nothing decodes until then: the clock jumps (the same in every run)
        for step in sorted(s for s in self._due if s <= nxt):
            for rid in self._due[step]:
                while rid not in self._continued and not self.closed:
                    self.wake.clear()
                    await self.wake.wait()
                for req in self._held.pop(rid, []):
                    self.engine.add_request(req)
                self._continued.discard(rid)
                self._finished_at.pop(rid, None)
            del self._due[step]
        self.steps = nxt - 1

    async def run(self) -> None:
        while not self.closed:
            if self.lag:
                await self._admit_due()
                if self.closed:
                    break
            if self.engine.has_unfinished():
                try:
                    outs = self.engine.step()
                except BaseException as e:  # surface engine failures in every waiting trajectory
                    for f in self.futures.values():
                        if not f.done():
                            f.set_exception(e)
                    self.futures.clear()
                    raise
                self.steps += 1
                for out in outs:
                    if self.lag:  # before the future resolves: the trajectory's next submit finds it pending
                        self._finished_at[out.request_id] = self.steps
                        self._due.setdefault(self.steps + self.lag, []).append(out.request_id)
                    fut = self.futures.pop(out.request_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(out)
                await asyncio.sleep(0)  # let finished sandbox calls and new requests in
            elif not self._due:
                self.wake.clear()
                await self.wake.wait()

    def close(self) -> None:
        self.closed = True
        self.wake.set()
