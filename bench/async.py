"""Async vs sync RL step time with a simulated slow learner and slow tools, side by side in one run.

    .venv/bin/python bench/async.py [--steps 8] [--learn-s 0.6] [--tool-s 0.15] [--gen-s 0.2]

Both modes drive the real `zerotir.train.pipeline.RolloutPipeline`. The rollout worker is a single-threaded
executor (like a Ray actor, it runs its calls in order: a weight sync queued behind an in-flight rollout waits for
it) whose rollouts sleep for generation and fan their tool calls out to a sandbox pool of threads that sleep per
call; the learner sleeps. Sleeping uses no CPU, so the figures are not disturbed by other load on the machine.
Expected: sync ≈ rollout + learn per step, async ≈ max(rollout, learn), with staleness ≤ max_staleness.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from zerotir.metrics import staleness
from zerotir.records import RolloutResult
from zerotir.train.pipeline import RolloutPipeline
from zerotir.types import Trajectory


class SimWorker:
    """One rollout worker: an engine whose weights carry a version, and a sandbox pool."""

    def __init__(self, args):
        self.args = args
        self.version = 0
        self.actor = ThreadPoolExecutor(1)                  # serial, like an actor's mailbox
        self.sandbox = ThreadPoolExecutor(args.sandbox_workers)

    def _rollout(self, step: int) -> RolloutResult:
        a = self.args
        v = self.version
        trajs = []
        for _turn in range(a.turns):                         # generate, then run this turn's tool calls in parallel
            time.sleep(a.gen_s)
            list(self.sandbox.map(lambda _: time.sleep(a.tool_s), range(a.trajectories)))
        for _ in range(a.trajectories):
            trajs.append(Trajectory(problem_id=f"s{step}", prompt_ids=[1], response_ids=[2], loss_mask=[1],
                                    logprobs=[-1.0], policy_version=v))
        return RolloutResult(tuple(trajs), step=step)

    def launch(self, step: int):
        return self.actor.submit(self._rollout, step)

    def sync_weights(self, version: int) -> None:
        def set_version():
            self.version = version
        self.actor.submit(set_version)                      # queued behind in-flight rollouts, like Ray

    def close(self):
        self.actor.shutdown()
        self.sandbox.shutdown()


def run(args, async_mode: bool) -> dict[str, float]:
    w = SimWorker(args)
    pipe = RolloutPipeline(w.launch, max_staleness=args.max_staleness, async_mode=async_mode)
    times, lags = [], []
    for step in range(1, args.steps + 1):
        t0 = time.perf_counter()
        batch = pipe.get(step, version=step - 1, last_step=args.steps)
        lags.append(staleness(batch.trajectories, step - 1))
        time.sleep(args.learn_s)                            # the learner update
        w.sync_weights(step)
        times.append(time.perf_counter() - t0)
    w.close()
    steady = times[1:] if len(times) > 1 else times         # step 1 has nothing to overlap with
    return {"step_s": statistics.mean(steady),
            "staleness_mean": statistics.mean(x["rollout/staleness_mean"] for x in lags),
            "staleness_max": max(x["rollout/staleness_max"] for x in lags), "dropped": pipe.dropped_batches}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--learn-s", type=float, default=0.6, help="simulated learner update per step (s)")
    p.add_argument("--tool-s", type=float, default=0.15, help="simulated sandbox execution per tool call (s)")
    p.add_argument("--gen-s", type=float, default=0.2, help="simulated generation per turn (s)")
    p.add_argument("--turns", type=int, default=2, help="generate + tool-call turns per rollout")
    p.add_argument("--trajectories", type=int, default=16, help="trajectories per step")
    p.add_argument("--sandbox-workers", type=int, default=8)
    p.add_argument("--max-staleness", type=int, default=1)
    args = p.parse_args()

    roll_s = args.turns * (args.gen_s + args.tool_s * -(-args.trajectories // args.sandbox_workers))
    sync = run(args, async_mode=False)
    asyn = run(args, async_mode=True)
    print(f"simulated rollout ≈ {roll_s:.2f} s/step, learner = {args.learn_s:.2f} s/step, {args.steps} steps "
          f"(step 1 excluded from the means)")
    for name, r in (("sync ", sync), ("async", asyn)):
        print(f"{name}: {r['step_s']:.3f} s/step  staleness mean {r['staleness_mean']:.2f} max {r['staleness_max']:.0f}"
              f"  dropped batches {r['dropped']}")
    ideal = (roll_s + args.learn_s) / max(roll_s, args.learn_s)
    print(f"speed-up sync/async: {sync['step_s'] / asyn['step_s']:.2f}x  (ideal overlap {ideal:.2f}x)")


if __name__ == "__main__":
    main()
