"""HFEngine: the torch generation engine (CPU/GPU) with its own batched KV-cache sampling loop.

Continuous batching over a hand-managed KV cache (`SlotCache`): each active request owns one row of per-layer key /
value buffers [rows, kv_heads, capacity, head_dim], holding its positions 0..len-1. Rows are kept compact (active
requests are rows 0..n-1), so one decode step is one forward of n rows × 1 token with a per-row attention mask and
per-row position ids. A finished request frees its row (the last row moves into the hole); a waiting request joins
by a prefill forward into a fresh row. A request that stopped on a stop string (typically a python block waiting
for its tool) parks its cache; the continuation (`GenerationRequest.prefix_of`) reuses it and only prefills the
inserted tokens. Requests that join together with the same context (a prompt's G samples) are prefilled once: the
other rows copy the first one's cache row and last logits. Tree rollouts: `fork(request_id, new_ids)` lets K
continuations start from one parked cache; submitted together they are prefilled once (the tool block only), the
other K-1 rows copy that row — the shared prefix is never recomputed (`stats['forward_tokens']` counts every fed
token, so tests can check it).

Works with any HF causal LM whose attention layers call `cache.update(k, v, layer_idx)` (HF's `Cache` API; the
cache goes in by the keyword the model's forward names, `models.cache.cache_kwarg`) and accept a prepared mask
mapping (Llama, Qwen2, Mistral, Gemma 3, ...); sliding-window layers get windowed masks
(`zerotir.models.masks.MaskPlan`, read from the config once). Log-probs: see `zerotir.rollout.engine`; the forward
runs in the model's dtype and logits are turned into log-probs in float32.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import torch

from zerotir.models.cache import cache_kwarg
from zerotir.models.masks import mask_plan
from zerotir.rollout.engine import GenerationOutput, GenerationRequest
from zerotir.rollout.kv_cache import SlotCache
from zerotir.rollout.sampling import filter_logits, sample_from_logits
from zerotir.rollout.textstream import IncrementalDetokenizer, StopMatcher, fast_decoder
from zerotir.rollout.threads import ThreadTuner


@dataclass
class _Seq:
    request: GenerationRequest
    generator: torch.Generator | None
    detok: IncrementalDetokenizer
    matcher: StopMatcher
    stop_ids: set[int]
    kv_len: int = 0
    """Positions of this request's full sequence whose keys/values are in its cache row."""
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)

    @property
    def all_ids(self) -> list[int]:
        return self.request.context_ids + self.tokens


@dataclass
class _Parked:
    ids: list[int]
    """The token ids whose keys/values are saved (context ‖ sampled, minus the last sampled token)."""
    kv: list[tuple[torch.Tensor, torch.Tensor]]


class HFEngine:
    """Engine over an HF causal LM. `max_batch` rows decode together; extra requests wait in FIFO order.

    seed: the engine RNG, which seeds each request that has no `params.seed` (deterministic for a fixed request
    order). `max_parked`: paused requests whose caches are kept for their continuation (LRU; default 2×max_batch).
    Waiting continuations of parked requests are admitted before new requests.
    merge_pad_tokens: when requests join, decode rows are padded into the joiners' prefill forward (one forward
    instead of two) if that adds at most this many padded tokens. Kept small: measured on the 2-core CPU, padded
    compute outweighs the saved per-forward overhead beyond a few dozen tokens.
    cpu_threads: torch intra-op threads during `step` on CPU (restored after). None: chosen by measurement between 1
    and torch's current count, and re-measured from time to time (`ThreadTuner`): small models decode faster with
    all cores on an idle machine and up to 10× slower with them when the cores are shared.
    share_prefill: requests that join in the same step with the same context (the G samples of a prompt) are
    prefilled once and the others copy that cache row and its logits (identical results, G× less prefill).
    """

    def __init__(self, model: Any, tokenizer: Any, max_batch: int = 64, device: str | None = None, seed: int = 0,
                 max_parked: int | None = None, cpu_threads: int | None = None, merge_pad_tokens: int = 64,
                 share_prefill: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device else next(model.parameters()).device
        if next(model.parameters()).device != self.device:
            model.to(self.device)
        model.eval()
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model.config.eos_token_id
        if isinstance(eos, (list, tuple)):
            eos = eos[0]
        if eos is None:
            raise ValueError("HFEngine: the tokenizer/model has no EOS token id")
        self.eos_token_id = int(eos)
        self.max_batch = max_batch
        self.merge_pad_tokens = merge_pad_tokens
        self.share_prefill = share_prefill
        self.max_parked = 2 * max_batch if max_parked is None else max_parked
        self._rng = random.Random(seed)
        self._version = 0
        self._base = model.base_model
        self._head = model.get_output_embeddings()
        self._dtype = next(model.parameters()).dtype
        self.cpu_threads = cpu_threads if self.device.type == "cpu" else None
        self.thread_tuner = None
        if self.device.type == "cpu" and cpu_threads is None:
            self.thread_tuner = ThreadTuner([1, torch.get_num_threads()])
        self._masks = mask_plan(model.config)  # refuses attention layer types it cannot mask (before any work)
        self._cache = SlotCache(max_batch)
        self._cache_kw = cache_kwarg(self._base)  # 'cache' (transformers >= 5.2x) or 'past_key_values'
        self._decode = fast_decoder(tokenizer)
        self._rows: list[_Seq] = []
        self._waiting: deque[GenerationRequest] = deque()
        self._parked: OrderedDict[str, _Parked] = OrderedDict()
        self.stats = {"forward_tokens": 0, "reused_tokens": 0, "shared_prefill_tokens": 0, "steps": 0, "forwards": 0}

    # ------------------------------------------------------------------ contract
    def add_request(self, request: GenerationRequest) -> None:
        if not request.context_ids:
            raise ValueError(f"request {request.request_id}: empty context")
        if request.params.max_new_tokens < 1:
            raise ValueError(f"request {request.request_id}: max_new_tokens must be >= 1")
        if getattr(request, "prefix_of", None) in self._parked:
            self._waiting.appendleft(request)  # a continuation first: its cache is parked and its trajectory nearer done
        else:
            self._waiting.append(request)

    def has_unfinished(self) -> bool:
        return bool(self._rows or self._waiting)

    @torch.inference_mode()
    def abort(self, request_id: str) -> None:
        self._waiting = deque(r for r in self._waiting if r.request_id != request_id)
        for i, s in enumerate(self._rows):
            if s.request.request_id == request_id:
                self._remove_rows([i])
                break
        self._parked.pop(request_id, None)

    def release(self, request_id: str) -> None:
        """Drop the parked cache of a finished request (its trajectory will not continue)."""
        self._parked.pop(request_id, None)

    def fork(self, request_id: str, new_ids: list[str]) -> bool:
        """Make the parked cache of `request_id` the starting point of one continuation per id in `new_ids` (each
        names its id in `prefix_of`); the original id is dropped. The saved keys/values are shared, not copied, until
        a continuation is admitted (then its row is copied in). False when nothing is parked under `request_id`."""
        entry = self._parked.pop(request_id, None)
        if entry is None:
            return False
        for nid in new_ids:
            self._parked[nid] = entry
        while len(self._parked) > self.max_parked:
            self._parked.popitem(last=False)
        return True

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        for r in requests:
            self.add_request(r)
        want = {r.request_id for r in requests}
        done: dict[str, GenerationOutput] = {}
        while want - done.keys():
            if not self.has_unfinished():
                raise RuntimeError("HFEngine.generate: requests vanished (aborted?)")
            for out in self.step():
                done[out.request_id] = out
        return [done[r.request_id] for r in requests]

    def update_weights(self, state_dict: dict[str, Any], version: int) -> None:
        """Copy tensors into the model by parameter/buffer name (a subset is allowed; unknown names raise)."""
        own = dict(self.model.named_parameters())
        own.update(dict(self.model.named_buffers()))
        unknown = [k for k in state_dict if k not in own]
        if unknown:
            raise KeyError(f"update_weights: names not in the engine's model: {unknown[:5]}")
        with torch.no_grad():
            for k, v in state_dict.items():
                own[k].copy_(v.to(own[k].device, own[k].dtype))
        self._parked.clear()  # caches computed with the old weights
        self._version = int(version)

    @property
    def policy_version(self) -> int:
        return self._version

    # ------------------------------------------------------------------ stepping
    def step(self) -> list[GenerationOutput]:
        """Decode one token for every active row; admit waiting requests (prefill + first token)."""
        threads = self.thread_tuner.threads() if self.thread_tuner is not None else self.cpu_threads
        if threads is None:
            return self._step()
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        rows, decode_only = len(self._rows), not self._waiting
        t0 = time.perf_counter()
        try:
            return self._step()
        finally:
            torch.set_num_threads(before)
            if self.thread_tuner is not None:
                self.thread_tuner.record(threads, time.perf_counter() - t0, rows, decode_only)

    @torch.inference_mode()  # cheaper than no_grad per op; cache tensors are only ever touched in here
    def _step(self) -> list[GenerationOutput]:
        self.stats["steps"] += 1
        sampled: list[tuple[int, int, float, float]] = []  # (row, token, logprob, raw)
        n_old = len(self._rows)
        admitted = []
        while self._waiting and n_old + len(admitted) < self.max_batch:
            req = self._waiting.popleft()
            admitted.append((req, self._seed_for(req)))  # seeds drawn in arrival order, whatever the row order
        leaders, followers = self._split_shared_contexts(admitted)
        joiners = [self._admit(req, seed) for req, seed in leaders]  # rows n_old.. (cache reuse included)
        feeds = [[s.tokens[-1]] for s in self._rows[:n_old]] + [s.request.context_ids[s.kv_len:] for s in joiners]
        q = max((len(f) for f in feeds), default=0)
        if n_old and joiners and len(feeds) * q - sum(len(f) for f in feeds) <= self.merge_pad_tokens:
            groups = [(0, len(feeds))]          # one forward: decode rows padded to the joiners' length
        else:
            groups = [(0, n_old), (n_old, len(feeds))]
        lead_logits: dict[int, torch.Tensor] = {}  # joiner row → its last-position logits (for its followers)
        for r0, r1 in groups:
            if r1 <= r0:
                continue
            part = feeds[r0:r1]
            width = max(len(f) for f in part)
            ids = torch.tensor([f + [self.eos_token_id] * (width - len(f)) for f in part], device=self.device)
            start = torch.tensor([s.kv_len for s in self._rows[r0:r1]], device=self.device)
            qlens = torch.tensor([len(f) for f in part], device=self.device)
            logits = self._forward(r0, ids, start, qlens)
            for s, f in zip(self._rows[r0:r1], part):
                s.kv_len += len(f)
            self.stats["forward_tokens"] += sum(len(f) for f in part)
            sampled += self._sample(r0, logits)
            if followers:
                lead_logits.update({r0 + i: logits[i] for i in range(max(0, n_old - r0), r1 - r0)})
        if followers:
            sampled += self._join_followers(followers, n_old, lead_logits)
        finished: list[GenerationOutput] = []
        done_rows = []
        for row, tok, lp, raw in sampled:
            s = self._rows[row]
            s.tokens.append(tok)
            s.logprobs.append(lp)
            s.raw.append(raw)
            out = self._check_finish(s, tok)
            if out is not None:
                finished.append(out)
                done_rows.append(row)
        if done_rows:
            self._remove_rows(done_rows, park={i for i, o in zip(done_rows, finished)
                                               if o.finish_reason == "stop" or self._rows[i].request.params.park})
        return finished

    def _seed_for(self, req: GenerationRequest) -> int:
        return req.params.seed if req.params.seed is not None else self._rng.getrandbits(63)

    def _split_shared_contexts(self, admitted: list[tuple[GenerationRequest, int]]) -> tuple[list, list]:
        """Requests joining together with the same context (the G samples of one prompt) are prefilled once: the
        first is a leader (forwarded), the others follow it (its cache row and logits are copied). Returns
        (leaders, followers as (request, seed, index of the leader)). A request continuing a parked cache leads,
        unless its leader continues the same parked cache (the children of a `fork`)."""
        leaders: list[tuple[GenerationRequest, int]] = []
        followers: list[tuple[GenerationRequest, int, int]] = []
        first: dict[tuple[int, ...], int] = {}
        source: list[Any] = []  # per leader: the parked entry it continues (None for a fresh prefill)
        for req, seed in admitted:
            key = tuple(req.context_ids)
            parked = self._parked.get(getattr(req, "prefix_of", None) or "")
            if self.share_prefill and key in first and (parked is None or parked is source[first[key]]):
                followers.append((req, seed, first[key]))
                continue
            first.setdefault(key, len(leaders))
            leaders.append((req, seed))
            source.append(parked)
        return leaders, followers

    def _join_followers(self, followers: list[tuple[GenerationRequest, int, int]], n_old: int,
                        lead_logits: dict[int, torch.Tensor]) -> list[tuple[int, int, float, float]]:
        """Admit followers after the leaders' forward: copy each leader's cache row, sample from its logits."""
        first_row = len(self._rows)
        lead_rows = [n_old + j for _, _, j in followers]
        seqs = [self._admit(req, seed, load=False) for req, seed, _ in followers]
        length = max(self._rows[r].kv_len for r in lead_rows)
        self._cache.copy_rows(lead_rows, list(range(first_row, first_row + len(seqs))), length)
        for s, r in zip(seqs, lead_rows):
            s.kv_len = self._rows[r].kv_len
        self.stats["shared_prefill_tokens"] += sum(s.kv_len for s in seqs)
        return self._sample(first_row, torch.stack([lead_logits[r] for r in lead_rows]))

    def _admit(self, req: GenerationRequest, seed: int, load: bool = True) -> _Seq:
        p = req.params
        gen = None
        if p.temperature > 0:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(int(seed))
        seq = _Seq(request=req, generator=gen,
                   detok=IncrementalDetokenizer(self.tokenizer, req.context_ids[-4:], self._decode),
                   matcher=StopMatcher(list(p.stop_strings), code_block=getattr(p, "stop_at_code_block", False)),
                   stop_ids={self.eos_token_id, *p.stop_token_ids})
        row = len(self._rows)
        self._rows.append(seq)
        parked = self._parked.pop(req.prefix_of, None) if getattr(req, "prefix_of", None) else None
        if load and parked is not None and len(parked.ids) <= len(req.context_ids) \
                and req.context_ids[:len(parked.ids)] == parked.ids:
            self._cache.load_row(row, parked.kv)
            # at least the last context token is fed again: its logits give the first new token
            seq.kv_len = min(len(parked.ids), len(req.context_ids) - 1)
            self.stats["reused_tokens"] += seq.kv_len
        return seq

    def _forward(self, r0: int, ids: torch.Tensor, start: torch.Tensor, qlens: torch.Tensor) -> torch.Tensor:
        """Run rows r0..r0+B-1 on ids [B, q] at positions start[b] + j; returns float32 logits [B, V] at each row's
        last real query (qlens[b] - 1). Padded queries write keys that no real query ever attends to."""
        b, q = ids.shape
        self.stats["forwards"] += 1
        pos = start[:, None] + torch.arange(q, device=self.device)[None, :]
        kv_len = int(start.max()) + q
        self._cache.plan(r0, pos, kv_len)
        key_pos = torch.arange(kv_len, device=self.device)
        allowed = key_pos[None, None, :] <= pos[:, :, None]                        # [B, q, kv_len]
        # 4D masks (per layer type for sliding-window models) are used as-is by HF mask creation
        mask = self._masks.build(allowed, pos, key_pos[None, :].expand(b, kv_len), self._dtype)
        out = self._base(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                         **{self._cache_kw: self._cache})
        hidden = out.last_hidden_state[torch.arange(b, device=self.device), qlens - 1]
        return self._head(hidden).float()

    def _sample(self, r0: int, logits: torch.Tensor) -> list[tuple[int, int, float, float]]:
        seqs = self._rows[r0:r0 + logits.shape[0]]
        ps = [s.request.params for s in seqs]
        temp = torch.tensor([p.temperature for p in ps], device=self.device)
        top_k = torch.tensor([p.top_k for p in ps], device=self.device)
        top_p = torch.tensor([p.top_p for p in ps], device=self.device)
        uniforms = None
        if any(p.temperature > 0 for p in ps):
            vocab = logits.shape[-1]
            uniforms = torch.stack([
                torch.rand(vocab, generator=s.generator, device=self.device) if s.generator is not None
                else torch.full((vocab,), 0.5, device=self.device) for s in seqs])
        tokens, lp, raw = sample_from_logits(logits, temp, top_k, top_p, uniforms)
        if any(p.return_entropy for p in ps):
            ent = sampling_entropy(logits, temp, top_k, top_p).tolist()
            for s, p, e in zip(seqs, ps, ent):
                if p.return_entropy:
                    s.entropies.append(float(e))
        return [(r0 + i, int(t), float(a), float(r)) for i, (t, a, r) in
                enumerate(zip(tokens.tolist(), lp.tolist(), raw.tolist()))]

    def _check_finish(self, s: _Seq, tok: int) -> GenerationOutput | None:
        p = s.request.params
        reason, stop = None, None
        if tok in s.stop_ids:
            reason = "eos"
        else:
            if s.detok.add(tok):
                stop = s.matcher.feed(s.detok.text)
            if stop is not None:
                reason = "stop"
            elif len(s.tokens) >= p.max_new_tokens:
                reason = "length"
        if reason is None:
            return None
        return GenerationOutput(s.request.request_id, list(s.tokens), list(s.logprobs), list(s.raw), reason, stop,
                                list(s.entropies) if p.return_entropy else None)

    def _remove_rows(self, rows: list[int], park: set[int] = frozenset()) -> None:
        for i in sorted(rows, reverse=True):
            s = self._rows[i]
            if i in park and self.max_parked > 0:
                # the last sampled token was never fed, so the cache covers context ‖ tokens[:-1]
                self._parked[s.request.request_id] = _Parked(s.all_ids[:s.kv_len], self._cache.save_row(i, s.kv_len))
                while len(self._parked) > self.max_parked:
                    self._parked.popitem(last=False)
            last = len(self._rows) - 1
            if i != last:
                self._cache.move_row(last, i, self._rows[last].kv_len)
                self._rows[i] = self._rows[last]
            self._rows.pop()


def sampling_entropy(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
                     top_p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the distribution each row samples from: logits [B, V] → [B]. Greedy rows (temperature <= 0)
    get the entropy of the untempered distribution."""
    logp = filter_logits(logits.float(), temperature, top_k, top_p).log_softmax(dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)
