"""Data-parallel gradient sync: two gloo ranks reproduce the single-process gradient and clipped norm exactly."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from zerotir.distributed.dp import combine_stats, rank_batch, rank_rows, share
from zerotir.types import Trajectory, collate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 4, generator=g)
    w = torch.randn(7, generator=g).abs()  # per-row token counts (weights of a token-mean)
    return x, w


def _loss(model, x, w):
    """A token-mean style loss over the rows given: sum_i w_i * f(x_i) / sum_i w_i."""
    return (model(x).squeeze(-1) ** 2 * w).sum() / w.sum().clamp(min=1e-9)


def _worker(rank, world, port, out_dir):
    from zerotir.distributed.dp import allreduce_grads, broadcast_params

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(100 + rank)                       # different init on purpose: broadcast must fix it
    model = torch.nn.Linear(4, 1)
    broadcast_params(model)
    x, w = _data()
    rows = list(range(7))[rank::world]
    weight = float(w[rows].sum() / w.sum())
    _loss(model, x[rows], w[rows]).backward()
    allreduce_grads(model.parameters(), weight)         # what Learner.update's grad_sync hook runs, before clipping
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    torch.save({"grad": [p.grad.clone() for p in model.parameters()], "norm": float(norm),
                "params": [p.detach().clone() for p in model.parameters()]}, f"{out_dir}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_gloo_ranks_match_single_process_gradient(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    torch.manual_seed(100)                              # rank 0's init, which the broadcast spread
    ref = torch.nn.Linear(4, 1)
    x, w = _data()
    _loss(ref, x, w).backward()
    ref_norm = float(torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5))
    for a, b, p in zip(r0["grad"], r1["grad"], ref.parameters()):
        assert torch.equal(a, b)                        # ranks identical
        assert torch.allclose(a, p.grad, atol=1e-6)     # == single process (clipped)
    assert r0["norm"] == pytest.approx(ref_norm, rel=1e-6) and r1["norm"] == r0["norm"]
    assert ref_norm > 0.5                               # the clip was active, so clipping after sync mattered


def _traj(n_sampled: int) -> Trajectory:
    return Trajectory(problem_id="p", prompt_ids=[1, 2], response_ids=[3] * (n_sampled + 1),
                      loss_mask=[1] * n_sampled + [0], logprobs=[-1.0] * n_sampled + [0.0])


def test_rank_rows_shares_and_empty_share():
    batch = collate([_traj(1), _traj(2), _traj(3)], pad_id=0)   # 6 sampled tokens in all
    assert rank_rows([2, 0, 1], 0, 2) == [2, 1] and rank_rows([2, 0, 1], 1, 2) == [0]
    assert share(batch, [2, 1], "token_mean") == pytest.approx(5 / 6)
    assert share(batch, [0], "token_mean") == pytest.approx(1 / 6)
    assert share(batch, [0], "seq_mean_token_mean") == pytest.approx(1 / 3)
    assert share(batch, [], "token_mean") == 0.0
    empty = rank_batch(batch, [])
    assert empty.size == 1 and float(empty.loss_mask.sum()) == 0.0


def test_combine_stats_hand_computed():
    a = {"loss/policy": 1.0, "loss/is_ratio_mean": 1.1, "loss/is_ratio_max": 1.5, "optim/grad_norm": 3.0}
    b = {"loss/policy": 4.0, "loss/is_ratio_mean": 0.9, "loss/is_ratio_max": 2.0, "optim/grad_norm": 3.0}
    out = combine_stats([a, b], shares=[0.25, 0.75], token_shares=[0.5, 0.5])
    assert out["loss/policy"] == pytest.approx(0.25 * 1 + 0.75 * 4)
    assert out["loss/is_ratio_mean"] == pytest.approx(1.0)
    assert out["loss/is_ratio_max"] == 2.0 and out["optim/grad_norm"] == 3.0
    nan_rank = {"loss/policy": float("nan"), "loss/is_ratio_mean": float("nan"), "loss/is_ratio_max": 0.0,
                "optim/grad_norm": 3.0}
    out = combine_stats([a, nan_rank], shares=[1.0, 0.0], token_shares=[1.0, 0.0])
    assert out["loss/policy"] == 1.0 and out["loss/is_ratio_max"] == 1.5


def test_combine_stats_pools_the_advantage_std_exactly():
    """Rank 0 holds advantages [1, 2, 3], rank 1 holds [10]: the pooled std is that of all four values (torch's
    unbiased std), not a share-weighted mean of the ranks' stds."""
    f64 = torch.float64
    x0, x1, both = (torch.tensor(v, dtype=f64) for v in ([1.0, 2.0, 3.0], [10.0], [1.0, 2.0, 3.0, 10.0]))
    r0 = {"loss/advantage_mean": float(x0.mean()), "loss/advantage_std": float(x0.std())}
    r1 = {"loss/advantage_mean": float(x1.mean()), "loss/advantage_std": 0.0}   # what update() reports for 1 value
    out = combine_stats([r0, r1], shares=[0.75, 0.25], token_shares=[0.75, 0.25], total_tokens=4)
    assert out["loss/advantage_mean"] == pytest.approx(float(both.mean()))
    assert out["loss/advantage_std"] == pytest.approx(float(both.std()), rel=1e-12)
