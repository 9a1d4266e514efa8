"""The update phase: collate the kept trajectories into a TrainBatch, add reference log-probs / critic values,
compute advantages, then run train.ppo_epochs x train.minibatches optimizer steps on the learner."""

from __future__ import annotations

from zerotir.config import Config
from zerotir.train.stats import split_minibatches


def update_phase(learner, kept, cfg: Config, step: int, update=None) -> list[dict[str, float]]:
    """collate → reference log-probs / critic values → advantages → (off-policy: the learner's own old log-probs,
    rollout's as behaviour) → ppo_epochs x minibatches optimizer steps. Returns one stats dict per step.

    update(minibatch) -> stats defaults to `learner.update`; data-parallel ranks pass their synced update."""
    from zerotir.algos.advantages import compute_advantages
    from zerotir.train.learner import off_policy
    from zerotir.types import collate

    if not kept:
        return []
    t = cfg.train
    batch = collate(kept, learner.pad_id)
    if learner.use_kl:
        batch.ref_logprobs = learner.ref_logprobs(batch)
    if learner.critic is not None:
        batch.values = learner.values(batch)
    compute_advantages(batch, cfg.algo)                 # KL-in-reward uses the rollout log-probs, so this comes first
    if off_policy(cfg):
        batch.behaviour_logprobs = batch.old_logprobs
        batch.old_logprobs = learner.logprobs(batch) * batch.loss_mask
    update = update or learner.update
    stats = []
    for epoch in range(t.ppo_epochs):
        for idx in split_minibatches(batch.size, t.minibatches, (t.seed, step, epoch)):
            stats.append(update(batch.select(idx)))
    return stats
