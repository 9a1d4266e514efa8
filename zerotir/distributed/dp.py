"""Data-parallel learner pieces on torch.distributed (gloo on CPU, NCCL on GPU), exact w.r.t. the single process.

Every rank holds a full `Learner` and sees the same minibatch indices; rank r trains on rows `idx[r::world]`.
`Learner.update` normalises its loss by the rows it was given (token_mean: their sampled tokens; sequence modes:
their rows), so rank r's gradient is the mean over its share. Scaling it by share_r = n_r / N and summing over
ranks gives the gradient of the mean over the whole minibatch — the single-process gradient:

    sum_r (n_r / N) * grad(mean over rank r's rows) = grad(sum over all rows) / N

The all-reduce must happen after the last micro-batch's backward and BEFORE gradient clipping (so the clip and the
reported norm use the global gradient): the learner actor passes `lambda ps: allreduce_grads(ps, share_r)` as
`Learner.update(..., grad_sync=...)`, which calls it exactly there (policy, then critic).

A rank whose share of a minibatch is empty trains on one real row with its loss mask zeroed and share 0, so every
rank runs the same collectives and the same optimizer step (ranks stay bit-identical).

For models that do not fit one GPU, wrap the policy with FSDP2 (`torch.distributed.fsdp.fully_shard`) in the
learner actors instead: gradients are then reduce-scattered by FSDP itself and `allreduce_grads` is not used.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.distributed as dist

from zerotir.types import TrainBatch


def rank_rows(idx: Sequence[int], rank: int, world: int) -> list[int]:
    """Rank `rank`'s rows of a minibatch: a strided share, so ranks get near-equal row counts."""
    return list(idx)[rank::world]


def share(batch: TrainBatch, rows: Sequence[int], loss_agg: str) -> float:
    """This rank's weight n_r / N: sampled tokens (token_mean) or rows (sequence modes) of `rows` over the batch's."""
    if loss_agg == "token_mean":
        total = float(batch.loss_mask.sum())
        mine = float(batch.loss_mask[list(rows)].sum()) if rows else 0.0
    else:
        total, mine = float(batch.size), float(len(rows))
    return mine / total if total > 0 else 0.0


def rank_batch(batch: TrainBatch, rows: Sequence[int]) -> TrainBatch:
    """The rows of this rank; an empty share becomes row 0 with its loss mask zeroed (contributes nothing)."""
    if rows:
        return batch.select(list(rows))
    dummy = batch.select([0])
    dummy.loss_mask = torch.zeros_like(dummy.loss_mask)
    return dummy


def allreduce_grads(params: Iterable[torch.Tensor], weight: float, group=None) -> None:
    """grad ← sum over ranks of weight_r * grad_r, in one flattened all-reduce. Params without grad count as 0."""
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params])
    flat.mul_(weight)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    off = 0
    for p in params:
        n = p.numel()
        g = flat[off:off + n].view_as(p).to(p.dtype)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
        off += n


def broadcast_params(module: torch.nn.Module, src: int = 0, group=None) -> None:
    """Make every rank start from rank `src`'s weights (e.g. randomly initialised LoRA adapters or value heads)."""
    with torch.no_grad():
        for p in module.parameters():
            dist.broadcast(p.data, src=src, group=group)


# Stats of one update on each rank are means over that rank's share: combine with the shares (token shares for
# per-token statistics); the max and the optimizer's own numbers (identical on every rank) are taken as they are.
_MAX_KEYS = ("loss/is_ratio_max",)
_SAME_KEYS = ("optim/grad_norm", "optim/lr")


def combine_stats(per_rank: Sequence[dict[str, float]], shares: Sequence[float],
                  token_shares: Sequence[float]) -> dict[str, float]:
    """One update's stats across ranks → the single-process equivalent (exact for means; the advantage std is the
    share-weighted mean of per-rank stds, an approximation)."""
    out: dict[str, float] = {}
    per_token = ("loss/is_ratio_mean", "loss/clip_fraction", "loss/approx_kl_behaviour", "loss/advantage_mean",
                 "loss/advantage_std")
    for k in per_rank[0]:
        vals = [r[k] for r in per_rank]
        if k in _MAX_KEYS:
            out[k] = max(v for v, s in zip(vals, token_shares) if s > 0) if any(token_shares) else vals[0]
        elif k in _SAME_KEYS:
            out[k] = vals[0]
        else:
            w = token_shares if k in per_token else shares
            # a rank with share 0 trained on a masked dummy row: its stats are meaningless (maybe NaN), skip them
            out[k] = float(sum(v * s for v, s in zip(vals, w) if s > 0))
    return out
