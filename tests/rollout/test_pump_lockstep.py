"""EnginePump's lockstep mode (`rollout.deterministic`): with tool calls of random duration, the engine sees the same
requests at the same steps in every run (each continuation joins exactly `lag` steps after its request finished,
in finish order; a slow tool stalls the pump rather than letting the batch change), while free-running batches
follow the timing. Checked with a fake engine that logs every step's batch; the real engine's bit-identical
rollouts are checked in test_rollout_e2e.py."""

from __future__ import annotations

import asyncio
import random

import pytest

from zerotir.rollout.engine import EnginePump, GenerationOutput, GenerationRequest, SamplingParams, fork_id


class LogEngine:
    """Each request decodes `max_new_tokens` steps; `log[i]` = the request ids decoded at step i+1 (batch order)."""

    def __init__(self):
        self.active: list[list] = []
        self.log: list[list[str]] = []
        self.released: list[str] = []

    def add_request(self, req: GenerationRequest) -> None:
        self.active.append([req, 0])

    def has_unfinished(self) -> bool:
        return bool(self.active)

    def step(self) -> list[GenerationOutput]:
        self.log.append([r.request_id for r, _ in self.active])
        outs, keep = [], []
        for a in self.active:
            a[1] += 1
            if a[1] >= a[0].params.max_new_tokens:
                outs.append(GenerationOutput(a[0].request_id, [1] * a[1], [0.0] * a[1], [0.0] * a[1], "stop"))
            else:
                keep.append(a)
        self.active = keep
        return outs

    def release(self, request_id: str) -> None:
        self.released.append(request_id)


def run_rollout(lag: int, delays: random.Random, n_traj: int = 6, turns: int = 3, branch: bool = False):
    """n_traj trajectories of `turns` requests each (lengths 2-4 steps), a 'tool call' of random duration between
    turns; with `branch`, trajectory 0 forks into two children after its first turn (fork ids of its request)."""
    engine = LogEngine()
    starts: dict[str, int] = {}

    async def traj(i: int, pump: EnginePump, prev: str | None, turn0: int, name: str) -> None:
        for t in range(turn0, turns):
            req = GenerationRequest(f"{name}-t{t}", [1, 2, 3], SamplingParams(max_new_tokens=2 + (i + t) % 3),
                                    prefix_of=prev)
            out = await pump.generate(req)
            starts[req.request_id] = engine.log.index(next(x for x in engine.log if req.request_id in x)) + 1
            prev = out.request_id
            await asyncio.sleep(delays.uniform(0, 0.02))  # the tool call
            if branch and i == 0 and t == turn0 == 0:
                kids = [GenerationRequest(f"{name}-k{j}-t1", [1], SamplingParams(max_new_tokens=2),
                                          prefix_of=fork_id(prev, j)) for j in range(2)]
                futs = [pump.submit(k) for k in kids]
                await asyncio.gather(*futs)
                for k in kids:
                    pump.release(k.request_id)
                return
        pump.release(prev)

    async def main():
        pump = EnginePump(engine, lag=lag)
        task = asyncio.create_task(pump.run())
        await asyncio.gather(*(traj(i, pump, None, 0, f"g{i}") for i in range(n_traj)))
        pump.close()
        await task
        return pump

    pump = asyncio.run(main())
    return engine, starts, pump


@pytest.mark.parametrize("branch", [False, True])
def test_lockstep_batches_do_not_depend_on_tool_timing(branch):
    a, starts_a, _ = run_rollout(lag=3, delays=random.Random(1), branch=branch)
    b, starts_b, _ = run_rollout(lag=3, delays=random.Random(2), branch=branch)
    assert a.log == b.log and starts_a == starts_b
    assert sorted(a.released) == sorted(b.released) and len(a.released) == 6 + (1 if branch else 0)


def test_lockstep_continuation_joins_exactly_lag_steps_after_its_request_finished():
    engine, starts, pump = run_rollout(lag=3, delays=random.Random(5))
    for i in range(6):
        for t in range(1, 3):
            prev, cur = f"g{i}-t{t - 1}", f"g{i}-t{t}"
            finished = max(k for k, batch in enumerate(engine.log, 1) if prev in batch)
            assert starts[cur] == finished + 3, (cur, starts[cur], finished)
    assert not pump._due and not pump._held and not pump._finished_at   # nothing left waiting


def test_free_running_batches_follow_the_timing():
    # the problem lockstep solves: the same requests, other tool timings, other batches (this test fails if the
    # fake tools stop mattering, which would make the lockstep tests above vacuous)
    logs = {tuple(map(tuple, run_rollout(lag=0, delays=random.Random(s))[0].log)) for s in range(4)}
    assert len(logs) > 1


def test_lockstep_waits_for_a_slow_tool_instead_of_stepping_without_it():
    engine = LogEngine()

    async def main():
        pump = EnginePump(engine, lag=1)
        task = asyncio.create_task(pump.run())

        async def slow():
            out = await pump.generate(GenerationRequest("slow-t0", [1], SamplingParams(max_new_tokens=1)))
            await asyncio.sleep(0.05)     # many engine steps' worth of time: the other request must not run ahead
            out = await pump.generate(GenerationRequest("slow-t1", [1], SamplingParams(max_new_tokens=1),
                                                        prefix_of=out.request_id))
            pump.release(out.request_id)

        async def long():
            out = await pump.generate(GenerationRequest("long", [1], SamplingParams(max_new_tokens=4)))
            pump.release(out.request_id)

        await asyncio.gather(slow(), long())
        pump.close()
        await task

    asyncio.run(main())
    assert engine.log == [["slow-t0", "long"], ["long", "slow-t1"], ["long"], ["long"]]
