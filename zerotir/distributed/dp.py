"""Data-parallel learner pieces on torch.distributed (gloo on CPU, NCCL on GPU), exact w.r.t. the single process.

Every rank holds a full `Learner` and sees the same minibatch indices; rank r trains on rows `idx[r::world]`.
`Learner.update` normalises its loss by the rows it was given (token_mean: their sampled tokens; sequence modes:
their rows), so rank r's gradient is the mean over its share. Scaling it by share_r = n_r / N and summing over
ranks gives the gradient of the mean over the whole minibatch — the single-process gradient:

    sum_r (n_r / N) * grad(mean over rank r's rows) = grad(sum over all rows) / N

The all-reduce must happen after the last micro-batch's backward and BEFORE gradient clipping (so the clip and the
reported norm use the global gradient). `RankShare` is this rank's part, given to the learner when it is built
(`Learner(cfg, data_parallel=RankShare(rank, world, loss_agg))`): `Learner.update(minibatch)` trains on
`shard(minibatch)`, calls the share as its gradient sync exactly there (policy, then critic), and returns
`combine(stats)`, the single-process stats. Nothing is passed at call time.

A rank whose share of a minibatch is empty trains on one real row with its loss mask zeroed and share 0, so every
rank runs the same collectives and the same optimizer step (ranks stay bit-identical).

For models that do not fit one device, `train.learner_sharding: fsdp` shards the learner's models over the same
ranks (`zerotir.train.sharding`, FSDP2 `fully_shard`): the rows and shares are the same `RankShare`, but each rank's
loss is scaled by its share before backward and FSDP's reduce-scatter sums the gradients, so `allreduce_grads` is
not used (nor `broadcast_params`: the learner broadcasts rank 0's weights before sharding).
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
    """Make every rank start from rank `src`'s weights (e.g. randomly initialised LoRA adapters or value heads).
    FSDP-sharded parameters (DTensors: each rank holds a different shard) are skipped: they were broadcast whole
    before sharding."""
    with torch.no_grad():
        for p in module.parameters():
            if hasattr(p, "to_local"):
                continue
            dist.broadcast(p.data, src=src, group=group)


# Stats of one update on each rank are means over that rank's share: combine with the shares (token shares for
# per-token statistics); the max and the optimizer's own numbers (identical on every rank) are taken as they are.
_MAX_KEYS = ("loss/is_ratio_max",)
_SAME_KEYS = ("optim/grad_norm", "optim/lr")


class RankShare:
    """One rank's part in data-parallel updates (the `train.learner.DataParallel` protocol)."""

    def __init__(self, rank: int, world: int, loss_agg: str):
        self.rank, self.world, self.loss_agg = rank, world, loss_agg
        self.weight = self.token_weight = 0.0

    def shard(self, minibatch: TrainBatch) -> TrainBatch:
        """This rank's rows of the minibatch; remembers their share for the gradient sync and the stats."""
        rows = rank_rows(range(minibatch.size), self.rank, self.world)
        self.weight = share(minibatch, rows, self.loss_agg)
        self.token_weight = share(minibatch, rows, "token_mean")
        self.total_tokens = float(minibatch.loss_mask.sum())
        return rank_batch(minibatch, rows)

    def __call__(self, params: list[torch.nn.Parameter]) -> None:
        allreduce_grads(params, self.weight)

    def combine(self, stats: dict[str, float]) -> dict[str, float]:
        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, (stats, self.weight, self.token_weight))
        return combine_stats([g[0] for g in gathered], [g[1] for g in gathered], [g[2] for g in gathered],
                             total_tokens=self.total_tokens)


def combine_stats(per_rank: Sequence[dict[str, float]], shares: Sequence[float],
                  token_shares: Sequence[float], total_tokens: float | None = None) -> dict[str, float]:
    """One update's stats across ranks → the single-process equivalent. Means are exact (share-weighted); the
    advantage std is pooled exactly from the ranks' means, stds and token counts n_r = token_share_r · total_tokens:
    Σx² = Σ_r (n_r − 1)·s_r² + n_r·m_r², var = (Σx² − N·m²) / (N − 1) (torch's unbiased std). Without
    total_tokens it falls back to the share-weighted mean of the stds (an approximation)."""
    out: dict[str, float] = {}
    # the learner's token-weighted means (learner._TOKEN_MEANS) and the advantage moments
    per_token = ("loss/is_ratio_mean", "loss/clip_fraction", "loss/approx_kl_behaviour", "loss/tis_clip_fraction",
                 "loss/advantage_mean", "loss/advantage_std")
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
    if total_tokens and "loss/advantage_std" in out and "loss/advantage_mean" in out:
        n = [ts * total_tokens for ts in token_shares]
        sq = sum((nr - 1) * r["loss/advantage_std"] ** 2 + nr * r["loss/advantage_mean"] ** 2
                 for r, nr in zip(per_rank, n) if nr > 0)
        mean = out["loss/advantage_mean"]
        out["loss/advantage_std"] = float(max(sq - total_tokens * mean ** 2, 0.0) / max(total_tokens - 1, 1)) ** 0.5
    return out
