"""Async off-policy pipeline primitives (pure Python; no Ray, no torch): rollouts for step k+1 run while step k trains.

    pipe = RolloutPipeline(launch, max_staleness=cfg.train.max_staleness, async_mode=cfg.train.async_rollout)
    for step in range(1, steps + 1):
        batch = pipe.get(step, version=step - 1)   # waits for step's rollouts; keeps the next ones in flight
        ... train on batch.trajectories ...        # learner version becomes `step`
        ... sync weights to the engines ...

`launch(step)` starts the rollouts meant for `step` and returns a handle with `.result() -> RolloutResult` (`Done`
for the local backend, which generates synchronously; a small wrapper around Ray object refs for Ray). The engines record the policy version that
actually generated each trajectory, so staleness is measured, not assumed.

Sync mode (the default): nothing is launched ahead, so every trajectory comes from the current weights (lag 0).
Async mode: up to `max_staleness` steps are launched ahead. A batch launched while the learner is at version v-1 for
step v+a is consumed at version v+a-1, so its lag is at most a <= max_staleness. The buffer enforces the bound
anyway: a batch older than `max_staleness` (e.g. a weight sync that fell behind) is dropped, counted, and that step's
rollouts are re-launched on the current weights.

Staleness statistics (rollout/staleness_mean, rollout/staleness_max) come from `zerotir.metrics.staleness`. Off-policy correction happens in the update phase
(`zerotir.train.update.update_phase`): with algo.tis_cap > 0 the learner recomputes the PPO old log-probs itself and
weights each token by min(old / behaviour, tis_cap), the behaviour log-probs being those recorded at rollout
(current / behaviour is logged as loss/is_ratio_mean, loss/is_ratio_max). This module only bounds and measures lag.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from zerotir.records import RolloutResult


class Handle(Protocol):
    def result(self) -> RolloutResult: ...


def is_fresh(batch: RolloutResult, current: int, max_staleness: int) -> bool:
    """Every trajectory of the batch is at most `max_staleness` versions behind `current`."""
    return current - batch.min_version <= max_staleness


class RolloutPipeline:
    """Keeps the rollouts of the next steps in flight and hands out each step's batch when its turn comes."""

    def __init__(self, launch: Callable[[int], Handle], max_staleness: int = 1, async_mode: bool = False):
        if max_staleness < 0:
            raise ValueError(f"train.max_staleness must be >= 0, got {max_staleness}")
        self.launch = launch
        self.max_staleness = max_staleness
        self.ahead = max_staleness if async_mode else 0
        self.inflight: deque[tuple[int, Handle]] = deque()
        self.next_step = 1  # first step not launched yet
        self.dropped_batches = 0

    def start(self, first_step: int) -> None:
        """Begin at `first_step` (a resumed run starts past 1)."""
        self.next_step = first_step

    def _fill(self, up_to: int) -> None:
        while self.next_step <= up_to:
            self.inflight.append((self.next_step, self.launch(self.next_step)))
            self.next_step += 1

    def get(self, step: int, version: int, last_step: int | None = None) -> RolloutResult:
        """The batch for `step` with the learner at `version`; launches steps up to step + ahead (never past
        `last_step`) before waiting, so they generate while this step trains."""
        self._fill(min(step + self.ahead, last_step) if last_step is not None else step + self.ahead)
        s, handle = self.inflight.popleft()
        if s != step:
            raise RuntimeError(f"rollout pipeline out of order: asked for step {step}, next in flight is {s}")
        batch = handle.result()
        if not is_fresh(batch, version, self.max_staleness):
            # Too old to correct reliably: drop it and generate this step again on the current weights.
            self.dropped_batches += 1
            batch = self.launch(step).result()
        return batch

    def drain(self) -> None:
        """Wait for (and discard) rollouts still in flight, e.g. at the end of training."""
        while self.inflight:
            _, h = self.inflight.popleft()
            try:
                h.result()
            except Exception:  # noqa: BLE001 - shutting down; a failed extra rollout changes nothing
                pass


@dataclass
class Done:
    """An already-computed handle (sync code paths and tests)."""

    value: RolloutResult

    def result(self) -> RolloutResult:
        return self.value


def shard(items: Sequence[Any], n: int) -> list[tuple[int, list[Any]]]:
    """Split `items` into n contiguous shards as (offset, shard); empty shards are dropped. Contiguous shards keep
    group ids (offset + index) identical to a single-process rollout of the whole list."""
    n = max(1, min(n, len(items)))
    base, extra = divmod(len(items), n)
    out, pos = [], 0
    for i in range(n):
        size = base + (1 if i < extra else 0)
        out.append((pos, list(items[pos:pos + size])))
        pos += size
    return [(o, s) for o, s in out if s]
