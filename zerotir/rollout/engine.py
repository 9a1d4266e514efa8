"""The generation-engine contract: token ids in, token ids + per-token log-probs out.

Every engine (the HF/torch engine here, vLLM in `zerotir.distributed`) implements `Engine`. The TIR loop drives it
step-wise so that sequences can leave (to wait for a tool, or because they finished) and re-enter (with tool output
appended) while the others keep decoding — continuous batching:

    engine.add_request(GenerationRequest("traj-3/turn-1", context_ids, params))
    while engine.has_unfinished():
        for out in engine.step():          # zero or more finished requests per step
            ...                            # out.token_ids, out.logprobs, out.raw_logprobs, out.finish_reason

Optional extras an engine may offer (the TIR loop uses them when present): `release(request_id)` drops a paused
request's cached state once its trajectory ends; `GenerationRequest.prefix_of` / `SamplingParams.stop_at_code_block`
are hints/features documented on the fields.

Log-prob contract: `logprobs[i]` is log p(token_i) under the distribution actually sampled from (after temperature,
top-k, top-p renormalisation; for greedy it is the untempered log-prob); `raw_logprobs[i]` is the untempered model
log-prob log softmax(logits)[token_i]. Both have len(token_ids) entries.
"""

from __future__ import annotations

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
