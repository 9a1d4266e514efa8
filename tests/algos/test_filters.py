"""Trajectory filters: sandbox-error drop, overlong masking, dynamic sampling, refill count, stats names."""

from __future__ import annotations

import dataclasses

import torch

from zerotir.algos.advantages import compute_advantages
from zerotir.algos.filters import filter_trajectories, needs_refill
from zerotir.config import AlgoConfig
from zerotir.telemetry import METRICS
from zerotir.types import Trajectory, collate


def traj(group: int, reward: float, *, finish: str = "eos", sandbox_error: bool = False, n: int = 4) -> Trajectory:
    return Trajectory(problem_id=f"p{group}", prompt_ids=[1, 2], response_ids=list(range(3, 3 + n)),
                      loss_mask=[1] * n, logprobs=[-0.5] * n, raw_logprobs=[-0.4] * n, finish_reason=finish,
                      group_id=group, reward=reward, correct=reward > 0, sandbox_error=sandbox_error)


def batch_of_groups():
    return [traj(0, 1.0), traj(0, 0.0), traj(0, 1.0),                 # mixed: kept
            traj(1, 1.0), traj(1, 1.0),                                # all right: uniform
            traj(2, 0.0), traj(2, 0.0), traj(2, 1.0, sandbox_error=True),  # all wrong once the error is dropped
            traj(3, 0.0, finish="length"), traj(3, 1.0)]               # mixed, one truncated


def test_defaults_drop_only_sandbox_errors():
    trajs = batch_of_groups()
    res = filter_trajectories(trajs, AlgoConfig())
    kept, st = res.kept, res.metrics()
    assert len(kept) == 9 and all(not t.sandbox_error for t in kept)
    assert {k: st[k] for k in ("filter/kept", "filter/dropped_sandbox_errors", "filter/dropped_uniform_groups",
                               "filter/dropped_overlong")} == {"filter/kept": 9.0, "filter/dropped_sandbox_errors": 1.0,
                                                               "filter/dropped_uniform_groups": 0.0,
                                                               "filter/dropped_overlong": 0.0}
    assert all(v == 0.0 for k, v in st.items() if k.startswith("filter/dropped_") and k.endswith(("_roc", "_turns")))
    assert set(st) <= set(METRICS)


def test_dynamic_sampling_and_overlong():
    trajs = batch_of_groups()
    before = [dataclasses.asdict(t) for t in trajs]
    cfg = AlgoConfig(dynamic_sampling=True, overlong_filter=True)
    res = filter_trajectories(trajs, cfg)
    kept, st = res.kept, res.metrics()
    assert sorted({t.group_id for t in kept}) == [0, 3]
    assert st["filter/dropped_uniform_groups"] == 2.0          # group 1 (all right), group 2 (all wrong)
    assert st["filter/dropped_overlong"] == 1.0 and st["filter/kept"] == 5.0
    truncated = [t for t in kept if t.finish_reason == "length"][0]
    assert truncated.loss_mask == [0, 0, 0, 0] and truncated.logprobs == [0.0] * 4
    assert [dataclasses.asdict(t) for t in trajs] == before      # inputs untouched (the loop logs them)
    assert needs_refill(kept, 4) == 2 and needs_refill(kept, 2) == 0


def test_overlong_masked_row_keeps_group_baseline_but_trains_nothing():
    # group [0 (truncated), 1, 0]: mean 1/3 is computed with the truncated sample; its own row has no loss tokens
    trajs = [traj(0, 0.0, finish="length"), traj(0, 1.0), traj(0, 0.0)]
    kept = list(filter_trajectories(trajs, AlgoConfig(overlong_filter=True)).kept)
    batch = collate(kept, pad_id=0)
    adv = compute_advantages(batch, AlgoConfig(name="dr_grpo")).advantages
    torch.testing.assert_close(adv[:, 0], torch.tensor([0.0, 2 / 3, -1 / 3]))
    assert torch.all(adv[0] == 0)


def test_dynamic_sampling_drops_singletons_left_after_errors():
    trajs = [traj(0, 1.0), traj(0, 0.0, sandbox_error=True)]
    res = filter_trajectories(trajs, AlgoConfig(dynamic_sampling=True))
    kept, st = res.kept, res.metrics()
    assert kept == () and st["filter/dropped_uniform_groups"] == 1.0 and st["filter/dropped_sandbox_errors"] == 1.0
    res = filter_trajectories(trajs, AlgoConfig(dynamic_sampling=True, drop_sandbox_errors=False))
    kept, st = res.kept, res.metrics()
    assert len(kept) == 2 and st["filter/dropped_uniform_groups"] == 0.0
