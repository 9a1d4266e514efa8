"""Micro-batching for the learner's forwards: plan groups of rows within a token budget, trim each group to its own
widths, and scatter per-row results back.

Rows are sorted by real length and grouped so that rows x padded width <= train.micro_batch_tokens; each micro-batch
is trimmed to its own widths (no padding waste beyond the group's longest row). With shared prompts (the learner's
`share_prompt`), a prompt's rows stay in one micro-batch where they fit, and the budget counts each distinct prompt
once. Sequence layout (TrainBatch): prompts LEFT-padded to P columns, responses RIGHT-padded to R columns; position
ids come from the attention mask (cumsum - 1), so a left-padded row sees the positions the unpadded sequence had.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from zerotir.train.shared_prefix import prompt_keys
from zerotir.types import TrainBatch


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L] 0/1 mask → [B, L] positions counting real tokens from 0 (pads get 0)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.clamp_(min=0) * attention_mask.long()


def trim_batch(batch: TrainBatch) -> TrainBatch:
    """Drop prompt columns that are padding in every row (left) and response columns padding in every row (right)."""
    pm = batch.prompt_mask.bool().any(0)
    first = int(pm.nonzero()[0]) if pm.any() else batch.prompt_mask.shape[1] - 1
    rm = batch.response_mask.bool().any(0)
    last = int(rm.nonzero()[-1]) + 1 if rm.any() else 1
    fields = {}
    for name in TrainBatch.__dataclass_fields__:
        v = getattr(batch, name)
        if v is None or v.dim() != 2:
            fields[name] = v
        elif name.startswith("prompt_"):
            fields[name] = v[:, first:]
        else:
            fields[name] = v[:, :last]
    return TrainBatch(**fields)


def plan_micro_batches(prompt_lens: Sequence[int], response_lens: Sequence[int], max_tokens: int,
                       prompt_keys: Sequence[Any] | None = None) -> list[list[int]]:
    """Group row indices into micro-batches, longest first, so that each group's padded size stays within
    `max_tokens` (a row longer than that goes alone).

    Without prompt_keys the padded size is rows x (max prompt len + max response len). With prompt_keys (rows with
    equal keys share a prompt, run once by the shared-prompt forward) rows of one prompt are kept together and the
    size is distinct prompts x max prompt len + rows x max response len.
    Sorting by length keeps rows of similar length together, which is where the padding waste goes away."""
    n = len(prompt_lens)
    keys = list(range(n)) if prompt_keys is None else list(prompt_keys)
    key_no: dict[Any, int] = {}     # keys by first appearance: a stable tie-break that keeps a prompt's rows adjacent
    longest: dict[Any, int] = {}
    for i in range(n):
        key_no.setdefault(keys[i], len(key_no))
        longest[keys[i]] = max(longest.get(keys[i], 0), prompt_lens[i] + response_lens[i])
    order = sorted(range(n), key=lambda i: (-longest[keys[i]], key_no[keys[i]], -(prompt_lens[i] + response_lens[i]),
                                            i))
    groups: list[list[int]] = []
    cur: list[int] = []
    cur_keys: set[Any] = set()
    mp = mr = 0
    for i in order:
        np_, nr = max(mp, prompt_lens[i]), max(mr, response_lens[i])
        nk = len(cur_keys | {keys[i]})
        size = nk * np_ + (len(cur) + 1) * nr if prompt_keys is not None else (len(cur) + 1) * (np_ + nr)
        if cur and size > max_tokens:
            groups.append(cur)
            cur, cur_keys, np_, nr = [], set(), prompt_lens[i], response_lens[i]
        cur.append(i)
        cur_keys.add(keys[i])
        mp, mr = np_, nr
    if cur:
        groups.append(cur)
    return groups


def micro_batches(batch: TrainBatch, max_tokens: int, share_prompts: bool
                  ) -> tuple[list[TrainBatch], list[list[int]]]:
    """The planned micro-batches of `batch` (each trimmed) and the row indices each one holds."""
    plens = batch.prompt_mask.sum(1).tolist()
    rlens = batch.response_mask.sum(1).tolist()
    keys = prompt_keys(batch.prompt_ids, batch.prompt_mask) if share_prompts else None
    groups = plan_micro_batches(plens, rlens, max_tokens, keys)
    return [trim_batch(batch.select(torch.tensor(g, dtype=torch.long))) for g in groups], groups


@torch.no_grad()
def per_row(batch: TrainBatch, fn: Callable[[TrainBatch], torch.Tensor], max_tokens: int,
            share_prompts: bool) -> torch.Tensor:
    """Run fn(micro_batch) -> [b, r] over the micro-batches of `batch` (on its device) and scatter the results back
    into [B, R] float32, zero past each row's response."""
    out = torch.zeros(batch.response_ids.shape, dtype=torch.float32, device=batch.response_ids.device)
    mbs, groups = micro_batches(batch, max_tokens, share_prompts)
    for mb, g in zip(mbs, groups):
        vals = fn(mb)
        out[torch.tensor(g, device=out.device), : vals.shape[1]] = vals
    return out * batch.response_mask
