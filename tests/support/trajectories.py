"""Seeded synthetic trajectories for learner tests: random prompt/response ids, every third long response with a
tool block (mask 0) in the middle, groups of 2, random 0/1 rewards. Valid `Trajectory` records, not model output."""

from __future__ import annotations

import random

from zerotir.types import Segment, Trajectory


def random_trajectories(vocab: int, seed: int, n: int = 10) -> list[Trajectory]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lp, lr = rng.randint(2, 8), rng.randint(3, 12)
        mask = [1] * lr
        segs = [Segment("model", 0, lr)]
        if lr >= 6 and i % 3 == 0:  # a tool block in the middle (mask 0)
            mask[2:4] = [0, 0]
            segs = [Segment("model", 0, 2), Segment("tool", 2, 4), Segment("model", 4, lr)]
        out.append(Trajectory(problem_id=f"p{i // 2}", prompt_ids=[rng.randrange(2, vocab) for _ in range(lp)],
                              response_ids=[rng.randrange(2, vocab) for _ in range(lr)], loss_mask=mask,
                              logprobs=[(-rng.random() * 3 if m else 0.0) for m in mask], segments=segs,
                              group_id=i // 2, sample_index=i % 2, reward=float(rng.random() > 0.5)))
    return out
