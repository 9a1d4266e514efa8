"""Shared-prompt forward: each distinct prompt of a micro-batch runs once; its responses attend to its keys/values.

GRPO-style batches hold G responses per prompt. A plain forward runs every prompt G times; here the prompts run once
([U, P] tokens) and the responses ([b, R] tokens) attend to their prompt's keys/values, expanded to rows by index.
The expansion is differentiable (its backward sums the G rows' gradients into the one prompt pass), so log-probs and
gradients equal those of the plain forward up to float rounding, for (U·P + b·R) instead of b·(P + R) tokens.

Works with any HF causal LM whose attention layers call `cache.update(k, v, layer_idx)` on the cache they are passed (`models.cache.cache_kwarg`) and take prepared
4D masks as-is (Llama, Qwen2, Mistral, Gemma 3, ...: the models `HFEngine` runs; sliding-window layers get windowed
masks from `zerotir.models.masks`).

Shapes: prompt_ids/prompt_mask [b, P] (LEFT-padded), response_ids [b, R] (RIGHT-padded; right pads come after every
real query, so causality hides them); logits out [b, R, V], the ones predicting each response token.
"""

from __future__ import annotations

from typing import Any

import torch

from zerotir.models.cache import cache_kwarg
from zerotir.models.masks import mask_plan


def prompt_keys(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> list[tuple[int, ...]]:
    """Each row's real prompt tokens: rows with equal keys share one prompt pass."""
    return [tuple(t for t, m in zip(ids, mask) if m) for ids, mask in zip(prompt_ids.tolist(), prompt_mask.tolist())]


def group_rows_by_prompt(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """Rows with the same real prompt tokens share one prompt pass. Returns (first row of each distinct prompt,
    owner [b] long: index into that list for every row). Order of first appearance."""
    firsts: list[int] = []
    owner: list[int] = []
    seen: dict[tuple[int, ...], int] = {}
    for i, key in enumerate(prompt_keys(prompt_ids, prompt_mask)):
        if key not in seen:
            seen[key] = len(firsts)
            firsts.append(i)
        owner.append(seen[key])
    return firsts, torch.tensor(owner, dtype=torch.long, device=prompt_ids.device)


class _RecordKV:
    """Cache stand-in for the prompt pass: keeps each layer's keys/values (with their autograd history)."""

    is_compileable = False

    def __init__(self):
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []

    def update(self, key_states, value_states, layer_idx: int, *args: Any, **kwargs: Any):
        self.k.append(key_states)
        self.v.append(value_states)
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


class _PrefixKV:
    """Cache stand-in for the response pass: layer i's keys/values = its prompt's (rows expanded) ‖ the new ones."""

    is_compileable = False

    def __init__(self, recorded: _RecordKV, owner: torch.Tensor):
        self.k = [k.index_select(0, owner) for k in recorded.k]
        self.v = [v.index_select(0, owner) for v in recorded.v]

    def update(self, key_states, value_states, layer_idx: int, *args: Any, **kwargs: Any):
        return (torch.cat([self.k[layer_idx], key_states.to(self.k[layer_idx].dtype)], dim=2),
                torch.cat([self.v[layer_idx], value_states.to(self.v[layer_idx].dtype)], dim=2))

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return int(self.k[0].shape[2]) if self.k else 0


def shared_prompt_logits(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response_ids: torch.Tensor,
                         mask_dtype: torch.dtype, keep_ok: bool) -> torch.Tensor:
    """[b, R, V] logits predicting each response token, running each distinct prompt once (see module doc).

    mask_dtype: dtype of the additive masks (the attention's compute dtype). keep_ok: the model takes
    `logits_to_keep` (only the needed positions are projected to the vocabulary)."""
    firsts, owner = group_rows_by_prompt(prompt_ids, prompt_mask)
    sel = torch.tensor(firsts, dtype=torch.long, device=prompt_ids.device)
    p_ids, p_mask = prompt_ids[sel], prompt_mask[sel].bool()                      # [U, P]
    u, p = p_ids.shape
    b, r = response_ids.shape
    dev = prompt_ids.device
    # prompt pass: causal over real (left-padded) tokens; pad queries see only themselves' row and are never read
    p_pos = (p_mask.long().cumsum(-1) - 1).clamp(min=0)
    ar_p = torch.arange(p, device=dev)
    allowed = (ar_p[None, None, :] <= ar_p[None, :, None]) & p_mask[:, None, :]
    allowed |= torch.eye(p, dtype=torch.bool, device=dev)[None]                   # no all-masked rows
    rec = _RecordKV()
    kw = {"logits_to_keep": 1} if keep_ok else {}
    masks = mask_plan(model.config)
    mask = masks.build(allowed, p_pos, p_pos, mask_dtype)
    first_logits = model(input_ids=p_ids, attention_mask=mask, position_ids=p_pos, **{cache_kwarg(model): rec},
                         use_cache=True, **kw).logits[:, -1:]  # [U, 1, V]
    # response pass: keys = the row's prompt (its real tokens) ‖ its own response, causally (right pads come after
    # every real query, so causality already hides them)
    plen = p_mask.long().sum(-1)[owner]                                              # [b]
    ar_r = torch.arange(r, device=dev)
    r_pos = plen[:, None] + ar_r[None, :]
    causal = ar_r[None, :] <= ar_r[:, None]                                          # [R, R]
    allowed = torch.cat([p_mask[owner][:, None, :].expand(b, r, p), causal[None].expand(b, r, r)], dim=2)
    mask = masks.build(allowed, r_pos, torch.cat([p_pos[owner], r_pos], dim=1), mask_dtype)
    kw = {"logits_to_keep": r} if keep_ok else {}
    resp_logits = model(input_ids=response_ids, attention_mask=mask, position_ids=r_pos,
                        **{cache_kwarg(model): _PrefixKV(rec, owner)}, use_cache=True, **kw).logits[:, -r:]
    return torch.cat([first_logits[owner], resp_logits[:, :-1]], dim=1)
