"""THE training loop driven through its Backend protocol by a scripted backend: the rollouts' rewards are chosen by
the test, so the row's figures can be checked exactly. (The real backends are covered by the integration tests;
this checks the loop's own logic: refills, joined metrics, rows without an update, the step-0 row, compute totals.)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from zerotir.records import EvalResult, RolloutResult, UpdateResult
from zerotir.telemetry import Progress, read_metrics
from zerotir.train.compute import ModelShape, rollout_flops
from zerotir.train.loop import RunHealthError, train
from zerotir.train.pipeline import Done
from zerotir.types import Segment, Trajectory


def _traj(group: int, sample: int, correct: bool, version: int) -> Trajectory:
    return Trajectory(problem_id=f"p{group}", prompt_ids=[1, 2], response_ids=[3, 4, 5], loss_mask=[1, 1, 1],
                      logprobs=[-1.0] * 3, segments=[Segment("model", 0, 3)], group_id=group, sample_index=sample,
                      correct=correct, reward=float(correct), answer="1", policy_version=version)


class ScriptedBackend:
    """Rollout call k (in launch order) gets the k-th script entry: how many of each group's samples are correct
    (an int for every problem of the call, or a list with one int per problem)."""

    shape = ModelShape(params=1000, layers=1, attn_dim=4)

    def __init__(self, cfg, script: list[int]):
        self.cfg, self.script, self.calls, self.saved = cfg, list(script), [], []
        self.progress = Progress()   # part of the Backend protocol (the live view reads it)

    def launch(self, step, problems, group_offset, seed):
        n = self.cfg.rollout.n_samples
        k = len(self.calls)
        self.calls.append((step, len(problems), group_offset, seed))
        entry = self.script[k] if k < len(self.script) else 0
        if entry == "sandbox-down":   # every trajectory hit a sandbox infrastructure failure
            trajs = tuple(replace(_traj(group_offset + i, s, False, step - 1), sandbox_error=True)
                          for i in range(len(problems)) for s in range(n))
            return Done(RolloutResult(trajs, rollout_seconds=1.0, step=step))
        right = entry if isinstance(entry, list) else [entry] * len(problems)   # per problem, or the same for all
        trajs = tuple(_traj(group_offset + i, s, s < right[i], step - 1) for i in range(len(problems))
                      for s in range(n))
        return Done(RolloutResult(trajs, rollout_seconds=1.0, verify_timeouts=k + 1, step=step))

    def update(self, kept, step):
        if not kept:
            return UpdateResult()
        return UpdateResult(steps=({"loss/policy": 0.5, "optim/lr": 0.01},), trained_tokens=10, flops=100.0)

    def sync_weights(self, version, wait=True):
        pass

    def evaluate(self, problems, step):
        return EvalResult({"eval/accuracy": 0.1 * step}, seconds=0.0)

    def save(self, run_dir: Path, step, state, keep):
        self.saved.append((step, state))

    def load(self, checkpoint):
        raise AssertionError("not resumed in this test")

    def close(self):
        pass


def test_refill_metrics_cover_every_batch_and_a_step_without_update_logs_no_loss(small_train_cfg, tiny_model_dir,
                                                                                  tmp_path):
    cfg = small_train_cfg(tiny_model_dir, steps=2)
    cfg.rollout.n_samples = 4
    cfg.train.prompts_per_step, cfg.train.eval_every, cfg.train.save_every = 1, 0, 0
    cfg.algo.dynamic_sampling = True
    # step 1: first batch 0 of 4 right (dropped: uniform), refill 2 of 4 right (kept)
    # step 2: first batch 4 of 4 right, then 3 refills all 0 of 4 right: every group dropped, no update
    backend = ScriptedBackend(cfg, [0, 2, 4, 0, 0, 0])
    run = train(cfg, run_dir=str(tmp_path / "run"), backend_factory=lambda c: backend)
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]

    base, s1, s2 = rows
    assert base["eval/accuracy"] == 0.0 and base["compute/flops"] == 0.0 and base["compute/tokens"] == 0.0
    assert base["model/params"] == 1000.0

    assert s1["rollout/num_trajectories"] == 8.0
    assert s1["reward/accuracy"] == 0.25                   # 2 right of 8: the refill's rewards are counted
    assert s1["reward/verify_timeouts"] == 1.0 + 2.0       # counts add over the first batch and the refill
    assert s1["filter/kept"] == 4.0 and s1["filter/dropped_uniform_groups"] == 1.0
    assert s1["loss/policy"] == 0.5 and s1["perf/rollout_seconds"] == 2.0
    assert backend.calls[:2] == [(1, 1, 0, cfg.train.seed * 1_000_003 + 101),
                                 (1, 1, 1, cfg.train.seed * 1_000_003 + 101 + 1)]   # refill: next group ids/seed

    assert s2["rollout/num_trajectories"] == 16.0 and s2["reward/accuracy"] == 0.25
    assert s2["filter/kept"] == 0.0 and s2["filter/dropped_uniform_groups"] == 4.0
    assert not [k for k in s2 if k.startswith(("loss/", "optim/"))]   # no update: no zeros either
    assert s2["eval/accuracy"] == 0.2                      # the last step always evaluates

    # compute: the rollout's FLOPs of every trajectory (refills included) + the update's, cumulative
    per_group = rollout_flops(backend.shape, [_traj(0, s, False, 0) for s in range(4)])
    assert s1["compute/flops"] == 2 * per_group + 100.0
    assert s2["compute/flops"] == s1["compute/flops"] + 4 * per_group
    assert s1["compute/tokens"] == 8 * 3 + 10 and s2["compute/tokens"] == s1["compute/tokens"] + 16 * 3
    assert 0 < s1["compute/seconds"] <= s2["compute/seconds"]
    assert backend.saved[-1][0] == 2 and backend.saved[-1][1]["compute"]["flops"] == s2["compute/flops"]


def test_refills_draw_what_is_missing_until_full(small_train_cfg, tiny_model_dir, tmp_path):
    """prompts_per_step 4, G 2. The first batch keeps 2 groups; refill 1 asks for 2 prompts (one mixed, one uniform:
    dropped), refill 2 for 1 (mixed): 4 groups, stop. Group offsets and seeds follow (step, refill)."""
    cfg = small_train_cfg(tiny_model_dir, steps=1)
    cfg.rollout.n_samples = 2
    cfg.data.shuffle = False
    cfg.train.prompts_per_step, cfg.train.seed, cfg.train.eval_at_start = 4, 7, False
    cfg.algo.dynamic_sampling = True
    backend = ScriptedBackend(cfg, [[1, 2, 1, 0], [1, 0], [1]])
    rows = read_metrics(train(cfg, run_dir=str(tmp_path / "run"), backend_factory=lambda c: backend)
                        / "metrics.jsonl")
    base = 7 * 1_000_003 + 101
    assert [(c[1], c[2], c[3]) for c in backend.calls] == [(4, 0, base), (2, 4, base + 1), (1, 8, base + 2)]
    (row,) = rows
    assert row["filter/kept"] == 8.0 and row["filter/dropped_uniform_groups"] == 3.0
    assert row["rollout/num_trajectories"] == 14.0 and row["perf/rollout_seconds"] == 3.0
    assert row["reward/accuracy"] == 6 / 14           # (1+2+1+0) + (1+0) + 1 right of 14


def test_a_sandbox_outage_warns_each_step_then_stops_with_a_checkpoint(small_train_cfg, tiny_model_dir, tmp_path,
                                                                       caplog):
    cfg = small_train_cfg(tiny_model_dir, steps=5)
    cfg.rollout.n_samples = 2
    cfg.train.prompts_per_step, cfg.train.eval_at_start, cfg.train.save_every = 1, False, 0
    cfg.train.max_bad_steps = 2
    backend = ScriptedBackend(cfg, [1, "sandbox-down", "sandbox-down"])
    with pytest.raises(RunHealthError, match="2 consecutive bad steps.*2 of 2 trajectories hit a local sandbox"):
        train(cfg, run_dir=str(tmp_path / "run"), backend_factory=lambda c: backend)
    assert [m for m in caplog.messages if "sandbox" in m and "failure" in m][:2] == [
        "step 2: 2 of 2 trajectories hit a local sandbox (full) failure and were dropped",
        "step 3: 2 of 2 trajectories hit a local sandbox (full) failure and were dropped"]
    assert backend.saved[-1][0] == 2                       # the last good step's weights, to --resume from
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2]


def test_a_run_killed_before_its_first_checkpoint_starts_over_without_stale_rows(small_train_cfg, tiny_model_dir,
                                                                                 tmp_path):
    """--resume of a run dir without a checkpoint starts from step 0: the killed attempt's rows (its step-0 eval
    included) are dropped, not duplicated."""
    import json

    cfg = small_train_cfg(tiny_model_dir, steps=1)
    cfg.rollout.n_samples, cfg.train.prompts_per_step, cfg.train.eval_every = 2, 1, 0
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 0, "eval/accuracy": 0.5}) + "\n"
                                       + json.dumps({"step": 1, "reward/accuracy": 0.5}) + "\n")
    train(cfg, resume=str(run), backend_factory=lambda c: ScriptedBackend(c, [1]))
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1] and rows[0]["eval/accuracy"] == 0.0   # the new base eval
