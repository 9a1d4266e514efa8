"""The update phase: collate the kept trajectories into a TrainBatch, fill in reference log-probs / critic values,
advantages and (off-policy) the learner's proximal log-probs, then run train.ppo_epochs x train.minibatches
optimizer steps on the learner.

Each field of the batch is written once, before the first optimizer step (`prepare_batch`); the PPO epochs read it.
"""

from __future__ import annotations

from typing import Any, Sequence

from zerotir.config import Config
from zerotir.train.stats import split_minibatches
from zerotir.types import TrainBatch, Trajectory


def off_policy(cfg: Config) -> bool:
    """Whether the update phase should recompute proximal log-probs with the learner and correct the rollout's
    (behaviour) log-probs by truncated importance sampling: algo.tis_cap > 0 and the batch may come from another
    policy than the learner's current one — async rollouts (staleness > 0), an engine other than the learner's own
    forward (vLLM), or several optimizer steps per batch (ppo_epochs x minibatches > 1). Otherwise the rollout
    log-probs are the PPO old log-probs and no extra forward runs."""
    t = cfg.train
    return cfg.algo.tis_cap > 0 and ((t.async_rollout and t.max_staleness > 0) or cfg.rollout.engine != "hf"
                                     or t.ppo_epochs * t.minibatches > 1)


def prepare_batch(learner, kept: Sequence[Trajectory], cfg: Config) -> TrainBatch:
    """collate → reference log-probs (kl_coef > 0) / critic values (gae) → advantages → proximal log-probs
    (off-policy batches). KL-in-reward uses the rollout's log-probs, so it does not need the proximal forward."""
    from zerotir.algos.advantages import compute_advantages
    from zerotir.types import collate

    batch = collate(list(kept), learner.pad_id)
    batch = batch.replace(ref_logprobs=learner.ref_logprobs(batch) if learner.use_kl else None,
                          values=learner.values(batch) if learner.critic is not None else None)
    adv = compute_advantages(batch, cfg.algo)
    proximal = learner.logprobs(batch) * batch.loss_mask if off_policy(cfg) else None
    return batch.replace(advantages=adv.advantages, returns=adv.returns, proximal_logprobs=proximal)


def update_phase(learner, kept: Sequence[Trajectory], cfg: Config, step: int,
                 progress: Any = None) -> list[dict[str, float]]:
    """`prepare_batch`, then ppo_epochs x minibatches optimizer steps (`learner.update`; a data-parallel learner
    trains its rank's share of each). Returns one stats dict per step. `progress` (a `zerotir.telemetry.Progress`)
    counts the optimizer steps under 'update' for the live view."""
    if not kept:
        return []
    t = cfg.train
    batch = prepare_batch(learner, kept, cfg)
    stats = []
    for epoch in range(t.ppo_epochs):
        for idx in split_minibatches(batch.size, t.minibatches, (t.seed, step, epoch)):
            stats.append(learner.update(batch.select(idx)))
            if progress is not None:   # for the live view; nothing reads it back
                progress.advance("update")
    return stats
