"""Small pure pieces of the training loop: the prompt sampler (with a resumable cursor) and minibatch splitting.
(Metrics live in zerotir/metrics.py.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from zerotir.types import Problem


@dataclass
class PromptSampler:
    """Walks the training problems epoch by epoch; epoch e's order is a pure function of (seed, e), so the cursor
    (epoch, position) is all a checkpoint needs to continue with the same prompts."""

    problems: Sequence[Problem]
    seed: int = 0
    shuffle: bool = True
    epoch: int = 0
    pos: int = 0

    def order(self, epoch: int) -> list[int]:
        n = len(self.problems)
        if not self.shuffle:
            return list(range(n))
        return np.random.default_rng([self.seed, epoch]).permutation(n).tolist()

    def take(self, k: int) -> list[Problem]:
        out: list[Problem] = []
        while len(out) < k:
            order = self.order(self.epoch)
            need = k - len(out)
            chunk = order[self.pos:self.pos + need]
            out.extend(self.problems[i] for i in chunk)
            self.pos += len(chunk)
            if self.pos >= len(order):
                self.epoch, self.pos = self.epoch + 1, 0
        return out

    @property
    def cursor(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def restore(self, cursor: dict[str, int]) -> None:
        self.epoch, self.pos = int(cursor["epoch"]), int(cursor["pos"])


def split_minibatches(n: int, k: int, seed: Sequence[int]) -> list[list[int]]:
    """A seeded permutation of range(n) cut into k near-equal parts (empty parts dropped)."""
    perm = np.random.default_rng(list(seed)).permutation(n).tolist()
    k = max(1, min(k, n))
    return [perm[i::k] for i in range(k) if perm[i::k]]
