"""vLLM implementation of the engine contract (`zerotir.rollout.engine.Engine`), for GPU rollouts.

    engine = VLLMEngine("Qwen/Qwen2.5-7B", gpu_memory_utilization=0.8)
    engine.add_request(GenerationRequest("t0/turn-0", context_ids, SamplingParams(stop_strings=[CODE_CLOSE])))
    while engine.has_unfinished():
        for out in engine.step(): ...
    engine.update_weights(learner.policy_state_dict(), version=step)   # in place, KV/prefix cache reset

Written against vLLM's documented V1 API (`LLMEngine.from_engine_args`, `add_request` with a `TokensPrompt`,
`step`, `abort_request`, `collective_rpc` through a `worker_extension_cls`, `reset_prefix_cache`). It has NOT been
run on this project's CPU machines (no GPU, vLLM not installed); its tests are marked `gpu`.

Log-probs: the engine is created with `logprobs_mode="processed_logprobs"`, so the sampled-token log-prob vLLM
returns is taken from the distribution actually sampled from (after temperature / top-k / top-p) — the contract's
`logprobs`. The contract's `raw_logprobs` (untempered model log-probs) equal those when temperature is 1 and top-k /
top-p are off; otherwise a finished request is re-scored once with a prefill-only request (`prompt_logprobs=0`,
which vLLM computes from the raw logits) before it is reported.

Stop strings (and the code-block close, for `stop_at_code_block`) are passed as vLLM `stop` with
`include_stop_str_in_output=True`: vLLM stops after the token that completes the string and keeps that token, as the
contract asks. `GenerationRequest.prefix_of` needs no handling: vLLM's automatic prefix caching reuses the KV of a
trajectory's earlier turns by content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zerotir.rollout.engine import GenerationOutput, GenerationRequest, SamplingParams

WORKER_EXTENSION = "zerotir.distributed.vllm_engine.WeightSyncExtension"


class WeightSyncExtension:
    """Mixed into every vLLM worker (via `worker_extension_cls`); called through `collective_rpc`.
    `self.model_runner` is the worker's model runner (vLLM's worker attribute)."""

    def zerotir_load_weights(self, named_tensors: list[tuple[str, Any]]) -> int:
        """Copy HF-named tensors into the running model in place (vLLM's `load_weights` maps HF names, including
        fused qkv / gate-up projections). Returns how many tensors were given."""
        import torch

        device = next(self.model_runner.model.parameters()).device
        self.model_runner.model.load_weights(weights=[(n, t.to(device)) for n, t in named_tensors])
        torch.cuda.synchronize()
        return len(named_tensors)


def to_vllm_params(p: SamplingParams, *, scoring: bool = False):
    """Our SamplingParams → vllm.SamplingParams (logprobs=0: only the sampled token's log-prob is returned)."""
    from vllm import SamplingParams as VSamplingParams

    if scoring:  # prefill-only pass that returns raw log-probs of every prompt token
        return VSamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
    return VSamplingParams(
        n=1,
        temperature=p.temperature,
        top_p=p.top_p,
        top_k=p.top_k if p.top_k > 0 else -1,  # vLLM: -1 (or 0 in newer releases) disables top-k
        max_tokens=p.max_new_tokens,
        stop=_stops(p) or None,
        stop_token_ids=list(p.stop_token_ids) or None,
        include_stop_str_in_output=True,
        logprobs=0,
        seed=p.seed,
    )


def _stops(p: SamplingParams) -> list[str]:
    """Stop strings; `stop_at_code_block` becomes CODE_CLOSE as a plain stop string (vLLM cannot check that a python
    block was opened; the contract allows this: the TIR loop continues after a close that ends no block)."""
    from zerotir.rollout.format import CODE_CLOSE

    stops = list(p.stop_strings)
    if getattr(p, "stop_at_code_block", False) and CODE_CLOSE not in stops:
        stops.append(CODE_CLOSE)
    return stops


def needs_raw_rescore(p: SamplingParams) -> bool:
    """Whether the sampled distribution differs from the raw model distribution (so raw log-probs need a rescore).
    Greedy reports untempered log-probs already."""
    if p.temperature == 0:
        return False
    return p.temperature != 1.0 or p.top_p < 1.0 or p.top_k > 0


def sampled_logprobs(token_ids: list[int], logprobs: Any) -> list[float]:
    """Per-position {token_id: Logprob} (vLLM's SampleLogprobs; also a FlatLogprobs) → the sampled tokens' floats."""
    return [float(logprobs[i][tok].logprob) for i, tok in enumerate(token_ids)]


def finish_of(finish_reason: str | None, stop_reason: Any) -> tuple[str, str | None]:
    """vLLM (finish_reason, stop_reason) → our (finish_reason, stop_string).
    vLLM says 'stop' for EOS (stop_reason None), a stop token id (int) and a stop string (str); 'length' for
    max_tokens; 'abort' for aborted requests (reported as 'length': the response was cut, not finished)."""
    if finish_reason == "stop":
        if isinstance(stop_reason, str):
            return "stop", stop_reason
        return "eos", None
    return "length", None


def to_output(request_id: str, completion: Any) -> GenerationOutput:
    """One finished vLLM CompletionOutput → GenerationOutput (raw log-probs = sampled ones; see module doc)."""
    ids = list(completion.token_ids)
    lps = sampled_logprobs(ids, completion.logprobs) if ids else []
    reason, stop = finish_of(completion.finish_reason, completion.stop_reason)
    return GenerationOutput(request_id, ids, lps, list(lps), reason, stop)


@dataclass
class _Pending:
    output: GenerationOutput
    n_context: int


@dataclass
class VLLMEngine:
    """The Engine protocol on a vLLM `LLMEngine`. Extra keyword arguments go to vLLM's `EngineArgs`
    (tensor_parallel_size, gpu_memory_utilization, max_model_len, dtype, ...)."""

    model: str
    seed: int = 0
    raw_logprobs: bool = True
    """Fill `raw_logprobs` exactly (a rescore pass when sampling is tempered/truncated); False copies `logprobs`."""
    engine_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from vllm import EngineArgs, LLMEngine

        args = EngineArgs(model=self.model, seed=self.seed, enable_prefix_caching=True,
                          logprobs_mode="processed_logprobs", worker_extension_cls=WORKER_EXTENSION,
                          **self.engine_kwargs)
        self.llm = LLMEngine.from_engine_args(args)
        self.tokenizer = self.llm.get_tokenizer()
        self.eos_token_id = int(self.tokenizer.eos_token_id)
        self._version = 0
        self._params: dict[str, SamplingParams] = {}
        self._contexts: dict[str, list[int]] = {}
        self._rescoring: dict[str, _Pending] = {}  # scoring-request id → generation output awaiting raw log-probs

    # ------------------------------------------------------------------------------------------------ requests
    def add_request(self, request: GenerationRequest) -> None:
        from vllm.inputs import TokensPrompt

        self._params[request.request_id] = request.params
        self._contexts[request.request_id] = list(request.context_ids)
        self.llm.add_request(request.request_id, TokensPrompt(prompt_token_ids=list(request.context_ids)),
                             to_vllm_params(request.params))

    def step(self) -> list[GenerationOutput]:
        from vllm.inputs import TokensPrompt

        done: list[GenerationOutput] = []
        for ro in self.llm.step():
            if not ro.finished:
                continue
            rid = ro.request_id
            if rid in self._rescoring:  # raw log-probs of the generated tokens = the last prompt positions
                pend = self._rescoring.pop(rid)
                plps = ro.prompt_logprobs[pend.n_context:]
                pend.output.raw_logprobs = sampled_logprobs(pend.output.token_ids, plps)
                done.append(pend.output)
                continue
            out = to_output(rid, ro.outputs[0])
            params = self._params.pop(rid)
            context = self._contexts.pop(rid)
            if self.raw_logprobs and out.token_ids and needs_raw_rescore(params):
                sid = f"{rid}::raw"
                self._rescoring[sid] = _Pending(out, len(context))
                self.llm.add_request(sid, TokensPrompt(prompt_token_ids=context + out.token_ids),
                                     to_vllm_params(params, scoring=True))
                continue
            done.append(out)
        return done

    def has_unfinished(self) -> bool:
        return bool(self.llm.has_unfinished_requests())

    def abort(self, request_id: str) -> None:
        self.llm.abort_request([request_id, f"{request_id}::raw"])
        self._params.pop(request_id, None)
        self._contexts.pop(request_id, None)
        self._rescoring.pop(f"{request_id}::raw", None)

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        for r in requests:
            self.add_request(r)
        got: dict[str, GenerationOutput] = {}
        while self.has_unfinished():
            for out in self.step():
                got[out.request_id] = out
        return [got[r.request_id] for r in requests]

    # ------------------------------------------------------------------------------------------------- weights
    def update_weights(self, state_dict: dict[str, Any], version: int, chunk_bytes: int = 1 << 30) -> None:
        """Load new weights into every vLLM worker in place, then drop cached prefixes (their KV came from the old
        weights). Tensors travel in ~1 GiB chunks through `collective_rpc`; for multi-GPU clusters an NCCL
        broadcast from the learner is the faster path (see docs), with the same version bookkeeping."""
        if self.has_unfinished():
            raise RuntimeError("update_weights: requests are still running; finish or abort them first")
        chunk: list[tuple[str, Any]] = []
        size = 0
        for name, t in state_dict.items():
            t = t.detach().cpu().contiguous()
            chunk.append((name, t))
            size += t.numel() * t.element_size()
            if size >= chunk_bytes:
                self.llm.collective_rpc("zerotir_load_weights", args=(chunk,))
                chunk, size = [], 0
        if chunk:
            self.llm.collective_rpc("zerotir_load_weights", args=(chunk,))
        self.llm.reset_prefix_cache()
        self._version = int(version)

    @property
    def policy_version(self) -> int:
        return self._version
