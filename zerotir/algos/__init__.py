"""zerotir.algos: RL algorithms as pure tensor functions, registered by name.

    advantages.py  ADVANTAGE_ESTIMATORS (gae, grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline) and
                   compute_advantages(batch, cfg.algo)
    losses.py      aggregate, policy_loss (clip-higher, dual clip, truncated IS), kl_estimate, entropy_from_logits,
                   value_loss
    filters.py     filter_trajectories(trajs, cfg.algo) (sandbox errors, overlong, dynamic sampling), needs_refill

Imports only torch and zerotir.types (no model, engine or sandbox code).
"""
