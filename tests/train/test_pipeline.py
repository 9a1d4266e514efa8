"""Async pipeline primitives: launch order, staleness bound, dropping stale batches, sharding."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from zerotir.metrics import staleness
from zerotir.records import RolloutResult
from zerotir.train.pipeline import Done, RolloutPipeline, is_fresh, shard
from zerotir.types import Trajectory


def RolloutBatch(step: int, trajs: list) -> RolloutResult:  # noqa: N802 - reads like the record it builds
    return RolloutResult(tuple(trajs), step=step)


def traj(version: int, reward: float = 0.0) -> Trajectory:
    return Trajectory(problem_id="p", prompt_ids=[1], response_ids=[2], loss_mask=[1], logprobs=[-0.5],
                      policy_version=version, reward=reward)


class FakeWorld:
    """Launches 'rollouts' that record the engine version current at generation time (like a real engine)."""

    def __init__(self):
        self.engine_version = 0
        self.calls: list[tuple[int, int]] = []  # (step launched, engine version at launch)

    def launch(self, step: int):
        self.calls.append((step, self.engine_version))
        return Done(RolloutBatch(step, [traj(self.engine_version) for _ in range(2)]))


def run(world: FakeWorld, pipe: RolloutPipeline, steps: int) -> list[dict]:
    rows = []
    for step in range(1, steps + 1):
        batch = pipe.get(step, version=step - 1, last_step=steps)
        assert batch.step == step
        rows.append(staleness(batch.trajectories, step - 1))
        world.engine_version = step  # learner update + weight sync
    return rows


def test_sync_mode_launches_one_step_at_a_time_with_zero_lag():
    w = FakeWorld()
    rows = run(w, RolloutPipeline(w.launch, max_staleness=3, async_mode=False), steps=4)
    assert w.calls == [(1, 0), (2, 1), (3, 2), (4, 3)]
    assert all(r == {"rollout/staleness_mean": 0.0, "rollout/staleness_max": 0.0} for r in rows)


def test_async_mode_keeps_next_step_in_flight_and_lag_is_one():
    w = FakeWorld()
    rows = run(w, RolloutPipeline(w.launch, max_staleness=1, async_mode=True), steps=4)
    # step 2 is launched (on version 0) before step 1 trains; never past the last step
    assert w.calls == [(1, 0), (2, 0), (3, 1), (4, 2)]
    assert [r["rollout/staleness_max"] for r in rows] == [0.0, 1.0, 1.0, 1.0]


def test_async_depth_two_bounds_lag_by_two():
    w = FakeWorld()
    rows = run(w, RolloutPipeline(w.launch, max_staleness=2, async_mode=True), steps=5)
    assert w.calls[:3] == [(1, 0), (2, 0), (3, 0)]
    assert max(r["rollout/staleness_max"] for r in rows) == 2.0
    assert [r["rollout/staleness_max"] for r in rows] == [0.0, 1.0, 2.0, 2.0, 2.0]


def test_stale_batch_is_dropped_and_regenerated_on_current_weights():
    w = FakeWorld()
    pipe = RolloutPipeline(w.launch, max_staleness=1, async_mode=True)
    pipe.get(1, version=0, last_step=5)  # launches 1 and 2 on version 0
    w.engine_version = 3                  # weights jumped ahead: step 2's batch (version 0) is 3 behind
    b = pipe.get(2, version=3, last_step=5)
    assert pipe.dropped_batches == 1
    assert b.min_version == 3 and w.calls[-1] == (2, 3)


def test_is_fresh_boundary():
    b = RolloutBatch(1, [traj(2), traj(4)])
    assert is_fresh(b, current=3, max_staleness=1)
    assert not is_fresh(b, current=4, max_staleness=1)
    assert is_fresh(b, current=4, max_staleness=2)


@pytest.mark.parametrize("async_mode", [True, False])
def test_async_rollout_runs_while_caller_trains(async_mode):
    """Async: step 2's rollout is launched before step 1's training starts and runs while it trains. Sync: it is
    launched only after. (Structural: "training" waits for step 2's rollout to have run; a timeout means it did not.)"""
    launched_before_training: dict[int, bool] = {}
    training = threading.Event()
    step2_ran = threading.Event()
    pool = ThreadPoolExecutor(2)

    def launch(step):
        launched_before_training[step] = not training.is_set()

        def work():
            if step == 2:
                step2_ran.set()
            return RolloutBatch(step, [traj(0)])
        return pool.submit(work)

    pipe = RolloutPipeline(launch, max_staleness=1, async_mode=async_mode)
    pipe.get(1, version=0, last_step=2)
    training.set()                                               # "training" step 1 now
    overlapped = step2_ran.wait(timeout=2.0 if async_mode else 0.2)
    pipe.get(2, version=1, last_step=2)
    pool.shutdown()
    assert launched_before_training[2] is async_mode
    assert overlapped is async_mode


def test_out_of_order_request_fails():
    w = FakeWorld()
    pipe = RolloutPipeline(w.launch, max_staleness=1, async_mode=True)
    pipe.get(1, version=0)
    with pytest.raises(RuntimeError, match="out of order"):
        pipe.get(3, version=1)


def test_negative_staleness_rejected():
    with pytest.raises(ValueError, match="max_staleness"):
        RolloutPipeline(lambda s: Done(RolloutBatch(s, [])), max_staleness=-1)


def test_shard_contiguous_offsets():
    assert shard(list("abcde"), 2) == [(0, ["a", "b", "c"]), (3, ["d", "e"])]
    assert shard(list("ab"), 4) == [(0, ["a"]), (1, ["b"])]
    assert shard(list("abcd"), 1) == [(0, list("abcd"))]
    # union of shards is the input, in order
    items = list(range(11))
    assert [x for _, s in shard(items, 3) for x in s] == items


def test_sandbox_replica_pins_workers_round_robin():
    from zerotir.distributed.actors import sandbox_replica

    urls = "http://a:8080, http://b:8080,http://c:8080"
    assert [sandbox_replica(urls, i) for i in range(4)] == ["http://a:8080", "http://b:8080", "http://c:8080",
                                                           "http://a:8080"]
    assert sandbox_replica("http://only:1", 5) == "http://only:1"
