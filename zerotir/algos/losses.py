"""The RL objective and its pieces: pure functions of tensors. Shapes: B rows, R response columns, V vocabulary.

    loss, stats = rl_objective(LossInputs(...), cfg.algo)                     # the whole objective, scalar + LossStats

The learner only runs forwards and optimizer steps; which terms enter the loss, and with what weights, is decided
here. The pieces:

    loss = aggregate(per_token [B, R], mask [B, R], mode)                    # scalar
    loss, stats = policy_loss(logp, old_logp, adv, mask, clip_low=.2, clip_high=.28, agg="token_mean")
    loss, stats = decoupled_policy_loss(logp, prox_logp, behav_logp, adv, mask, cap=2.0)   # AReaL, async batches
    w, capped = behaviour_weights(prox_logp, behav_logp, mask, cap=2.0, mode="decoupled")  # [B, R] each
    kl = kl_estimate(logp, ref_logp, "k3")                                    # [B, R]
    ent = entropy_from_logits(logits)                                         # [B, R]
    vloss = value_loss(values, old_values, returns, mask, clip=0.2)           # scalar

Masked positions (mask 0: inserted tool tokens, padding) get exactly zero gradient, whatever garbage the inputs
hold there: every function that takes a mask selects with `torch.where` BEFORE any exp/square, so no inf/nan can
travel back through a masked position.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

AGG_MODES: tuple[str, ...] = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum")
KL_KINDS: tuple[str, ...] = ("k1", "k2", "k3")
OFF_POLICY_MODES: tuple[str, ...] = ("truncated_is", "decoupled")


def aggregate(x: torch.Tensor, mask: torch.Tensor, mode: str = "token_mean") -> torch.Tensor:
    """Reduce a per-token tensor to a scalar over the positions where mask is 1.

    x, mask: [B, R]. Modes:
      token_mean          sum(x·m) / sum(m)                       every sampled token of the batch weighs the same
      seq_mean_token_mean mean over the B rows of sum_t(x·m)/sum_t(m)   every sequence weighs the same
      seq_mean_token_sum  mean over the B rows of sum_t(x·m)       Dr.GRPO: no length normalisation
    Rows without any sampled token contribute 0 but still count in the B of the sequence modes (so micro-batch
    accumulation weighted by rows adds up to the whole-batch value).
    """
    m = mask.bool()
    xm = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))
    if mode == "token_mean":
        return xm.sum() / m.sum().clamp(min=1)
    if mode == "seq_mean_token_mean":
        return (xm.sum(-1) / m.sum(-1).clamp(min=1)).mean()
    if mode == "seq_mean_token_sum":
        return xm.sum(-1).mean()
    raise ValueError(f"unknown loss aggregation mode {mode!r} (algo.loss_agg): expected one of {AGG_MODES}")


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over positions where mask is 1 (0 when there are none)."""
    return aggregate(x, mask, "token_mean")


def behaviour_weights(proximal_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, mask: torch.Tensor,
                      cap: float, mode: str = "truncated_is") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token correction from the behaviour policy (that sampled) to the proximal one (the learner's, before the
    update phase): w = exp(proximal - behaviour) = pi_prox / pi_behav, detached. [B, R] each → (weights, capped).

      truncated_is  min(w, cap)                          truncated importance sampling: every token trains
      decoupled     w where w <= cap, else 0             AReaL's decoupled PPO: a token the proximal policy finds
                                                         far likelier than the behaviour one did is dropped
    `capped` marks the sampled tokens where the cap acted. Masked positions get weight 0; the log-weight is selected
    before exp, so garbage there cannot overflow. cap <= 0 means no correction (weight 1 on sampled tokens).
    """
    if mode not in OFF_POLICY_MODES:
        raise ValueError(f"unknown off-policy objective {mode!r} (algo.off_policy): expected one of {OFF_POLICY_MODES}")
    m = mask.bool()
    zero = torch.zeros((), dtype=proximal_logprobs.dtype, device=proximal_logprobs.device)
    if cap <= 0:
        return m.to(proximal_logprobs.dtype), torch.zeros_like(m)
    log_w = torch.where(m, proximal_logprobs - behaviour_logprobs, zero).detach()
    w = torch.exp(log_w)
    capped = (w > cap) & m
    if mode == "truncated_is":
        return torch.where(m, torch.clamp(w, max=cap), zero), capped
    return torch.where(m & ~capped, w, zero), capped


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                *, clip_low: float = 0.2, clip_high: float = 0.2, dual_clip: float = 0.0, agg: str = "token_mean",
                behaviour_logprobs: torch.Tensor | None = None, tis_cap: float = 0.0,
                off_policy: str = "truncated_is") -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate with separate low/high clip (clip-higher), optional dual clip and behaviour correction.

    logprobs [B, R]            current policy log-probs of the response tokens (carries the gradient)
    old_logprobs [B, R]        log-probs of the policy the ratio is taken against (the behaviour policy recorded at
                               rollout, or the learner's recomputed "proximal" policy when behaviour_logprobs is given)
    advantages [B, R], mask [B, R] (1 on sampled tokens)
    behaviour_logprobs [B, R]  rollout log-probs when they differ from old_logprobs (engine mismatch, async
                               staleness): each token's loss is multiplied by `behaviour_weights(old, behaviour,
                               mask, tis_cap, off_policy)`, detached: min(w, tis_cap) for 'truncated_is' (truncated
                               importance sampling), w or 0 (w > tis_cap) for 'decoupled'. Ignored when tis_cap <= 0.

    Per token: ratio r = exp(logp - old); l = max(-A·r, -A·clip(r, 1-clip_low, 1+clip_high)); with dual_clip c > 1,
    l = min(l, -A·c) where A < 0 (bounds the loss of a negative-advantage token whose ratio exploded).
    Returns (scalar loss = aggregate(l·w, mask, agg), stats) with stats:
      clip_fraction   share of sampled tokens where the clipped branch was taken
      dual_clip_fraction  share where the dual-clip bound was taken
      approx_kl       mean k3 estimate of KL(old || current) on sampled tokens
      is_ratio_mean / is_ratio_max   current / behaviour probability ratio on sampled tokens
      tis_clip_fraction  share of tokens whose behaviour weight exceeded tis_cap (truncated, or dropped by
                         'decoupled'); 0 without behaviour_logprobs
    """
    if dual_clip and dual_clip <= 1.0:
        raise ValueError(f"algo.dual_clip must be > 1 (or 0 = off), got {dual_clip}")
    m = mask.bool()
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    log_ratio = torch.where(m, logprobs - old_logprobs, zero)   # select first: masked garbage never reaches exp
    ratio = torch.exp(log_ratio)
    adv = torch.where(m, advantages, zero)
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss_tok = torch.maximum(pg1, pg2)
    clipped = (pg2 > pg1) & m
    dual = torch.zeros_like(m)
    if dual_clip:
        pg3 = -adv * dual_clip
        dual = (adv < 0) & (pg3 < loss_tok) & m
        loss_tok = torch.where(adv < 0, torch.minimum(loss_tok, pg3), loss_tok)
    tis_clipped = torch.zeros_like(m)
    is_log = log_ratio.detach()
    if behaviour_logprobs is not None:
        is_log = is_log + torch.where(m, old_logprobs - behaviour_logprobs, zero).detach()
        if tis_cap > 0:
            w, tis_clipped = behaviour_weights(old_logprobs, behaviour_logprobs, mask, tis_cap, off_policy)
            loss_tok = loss_tok * w
    loss = aggregate(loss_tok, mask, agg)
    with torch.no_grad():
        n = m.sum().clamp(min=1)
        lr = log_ratio.detach()
        k3 = torch.where(m, torch.exp(-lr) - 1.0 + lr, zero)    # KL(old || cur) with samples from old
        is_ratio = torch.where(m, torch.exp(is_log), zero)
        stats = {
            "clip_fraction": float(clipped.sum() / n),
            "dual_clip_fraction": float(dual.sum() / n),
            "approx_kl": float(k3.sum() / n),
            "is_ratio_mean": float(is_ratio.sum() / n),
            "is_ratio_max": float(is_ratio.max()) if m.any() else 0.0,
            "tis_clip_fraction": float(tis_clipped.sum() / n),
        }
    return loss, stats


def decoupled_policy_loss(logprobs: torch.Tensor, proximal_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor,
                          advantages: torch.Tensor, mask: torch.Tensor, *, cap: float, clip_low: float = 0.2,
                          clip_high: float = 0.2, dual_clip: float = 0.0, agg: str = "token_mean"
                          ) -> tuple[torch.Tensor, dict[str, float]]:
    """AReaL's decoupled PPO objective (Fu et al. 2025) for stale batches; all tensors [B, R]:

        loss = aggregate( w · max(-A·u, -A·clip(u, 1-clip_low, 1+clip_high)), mask )
        u = pi_theta / pi_prox  (carries the gradient),   w = pi_prox / pi_behav  (detached; 0 where w > cap)

    The trust region is taken around the proximal policy — the learner's weights before this update phase, whose
    log-probs the learner computes at update time (`train.update.prepare_batch`) — not around the stale behaviour
    policy that sampled, so a batch several versions old is not clipped against a policy the learner has left; w
    corrects the sampling distribution from behaviour to proximal. Tokens over the cap are dropped (AReaL's
    behav_imp_weight_cap), not truncated, and stay in the token count of the mean. This is `policy_loss` with
    off_policy='decoupled'; `rl_objective` selects it by algo.off_policy.
    """
    return policy_loss(logprobs, proximal_logprobs, advantages, mask, clip_low=clip_low, clip_high=clip_high,
                       dual_clip=dual_clip, agg=agg, behaviour_logprobs=behaviour_logprobs, tis_cap=cap,
                       off_policy="decoupled")


def check_objective_config(cfg) -> None:
    """Raise ValueError naming the field when an AlgoConfig asks for an objective this module does not have."""
    if cfg.off_policy not in OFF_POLICY_MODES:
        raise ValueError(f"algo.off_policy={cfg.off_policy!r}: expected one of {OFF_POLICY_MODES}")
    if cfg.loss_agg not in AGG_MODES:
        raise ValueError(f"algo.loss_agg={cfg.loss_agg!r}: expected one of {AGG_MODES}")


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(current || reference) from samples of the current policy. [B, R] → [B, R].

    With d = ref - logp (log of p_ref/p_cur):  k1 = -d (unbiased, can be negative);  k2 = d²/2;
    k3 = exp(d) - 1 - d (unbiased, non-negative, low variance). d is clamped to [-20, 20] so exp cannot overflow
    (beyond that the gradient is 0; such a token is far off anyway). Mask the result with `aggregate`.
    """
    d = ref_logprobs - logprobs
    if kind == "k1":
        return -d
    if kind == "k2":
        return 0.5 * d * d
    if kind == "k3":
        d = torch.clamp(d, -20.0, 20.0)
        return torch.exp(d) - 1.0 - d
    raise ValueError(f"unknown KL estimator {kind!r} (algo.kl_estimator): expected one of {KL_KINDS}")


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) per position: [..., V] → [...]. H = logsumexp(z) - Σ softmax(z)·z."""
    logits = logits.float()
    p = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(-1)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float = 0.2, agg: str = "token_mean") -> torch.Tensor:
    """Clipped critic loss, scalar. values (current critic), old_values (critic at rollout), returns: [B, R].

    Per token: ½·max((v - G)², (v_clip - G)²) with v_clip = old + clamp(v - old, -clip, clip); clip <= 0 gives the
    plain ½(v - G)². Aggregated over sampled tokens with `agg`.
    """
    m = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    v = torch.where(m, values, zero)
    old = torch.where(m, old_values, zero)
    ret = torch.where(m, returns, zero)
    err = (v - ret) ** 2
    if clip and clip > 0:
        v_clip = old + torch.clamp(v - old, -clip, clip)
        err = torch.maximum(err, (v_clip - ret) ** 2)
    return aggregate(0.5 * err, mask, agg)


# ---------------------------------------------------------------------------------------------- the objective


@dataclass(frozen=True)
class LossInputs:
    """Everything `rl_objective` reads; every tensor [B, R] on the same device.

    logprobs            current policy log-probs of the response tokens (carries the policy gradient)
    behaviour_logprobs  log-probs at rollout, under the distribution sampled from
    advantages          per token, 0 where mask is 0
    mask                1 on sampled tokens (inserted tool tokens and padding are 0)
    entropy             current policy entropy per position (carries a gradient only when algo.entropy_coef > 0)
    proximal_logprobs   the learner's own log-probs before the update phase (off-policy batches) or None; when given,
                        PPO's ratio is taken against them and each token is weighted by `behaviour_weights`
                        (algo.off_policy: min(proximal/behaviour, tis_cap), or AReaL's drop above tis_cap)
    ref_logprobs        reference-policy log-probs, or None (no KL term)
    values              current critic values (carries the critic gradient), or None (no critic)
    old_values          critic values at rollout (value clipping), with `values`
    returns             critic targets, with `values`
    """

    logprobs: torch.Tensor
    behaviour_logprobs: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor
    entropy: torch.Tensor
    proximal_logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    values: torch.Tensor | None = None
    old_values: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    def __post_init__(self) -> None:
        shape = tuple(self.logprobs.shape)
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and tuple(v.shape) != shape:
                raise ValueError(f"LossInputs.{f.name}: shape {tuple(v.shape)}, expected {shape} (that of logprobs)")
        if self.values is not None and (self.old_values is None or self.returns is None):
            raise ValueError("LossInputs.values needs old_values and returns (the critic loss's clip base and target)")


@dataclass(frozen=True)
class LossStats:
    """What one `rl_objective` call measured. The loss terms are aggregated like the loss (algo.loss_agg); the
    ratio statistics are means over sampled tokens."""

    policy: float
    entropy: float
    kl: float
    """Aggregated KL(current || reference) estimate, whether it is in the loss or in the reward (0 without one)."""
    value: float
    total: float
    clip_fraction: float
    dual_clip_fraction: float
    approx_kl: float
    """Mean k3 estimate of KL(old || current), old = proximal log-probs when given, else behaviour."""
    is_ratio_mean: float
    """Mean current / behaviour probability ratio on sampled tokens (1 at the first step of an on-policy batch)."""
    is_ratio_max: float
    tis_clip_fraction: float


def rl_objective(inputs: LossInputs, algo) -> tuple[torch.Tensor, LossStats]:
    """The scalar loss to minimise and its statistics. `algo` is an `AlgoConfig` (read: clip_low, clip_high,
    dual_clip, loss_agg, tis_cap, off_policy, entropy_coef, kl_coef, kl_estimator, kl_in_reward, value_coef,
    value_clip).

        total = policy_loss                                         PPO clipped surrogate (see `policy_loss`); with
                                                                    proximal log-probs and off_policy='decoupled'
                                                                    it is `decoupled_policy_loss`
              - entropy_coef · aggregate(entropy)                   when entropy_coef > 0
              + kl_coef · aggregate(kl_estimate(logp, ref))         when ref_logprobs is given, kl_coef > 0 and the
                                                                    KL is not folded into the reward (kl_in_reward)
              + value_coef · value_loss(values, old_values, returns)   when values are given

    With kl_in_reward the KL is already in the advantages (`compute_advantages`) and is only reported here.
    """
    x, m, agg = inputs, inputs.mask, algo.loss_agg
    old = x.behaviour_logprobs if x.proximal_logprobs is None else x.proximal_logprobs
    behaviour = None if x.proximal_logprobs is None else x.behaviour_logprobs
    policy, st = policy_loss(x.logprobs, old, x.advantages, m, clip_low=algo.clip_low, clip_high=algo.clip_high,
                             dual_clip=algo.dual_clip, agg=agg, behaviour_logprobs=behaviour, tis_cap=algo.tis_cap,
                             off_policy=algo.off_policy)
    total = policy
    ent = aggregate(x.entropy, m, agg)
    if algo.entropy_coef > 0:
        total = total - algo.entropy_coef * ent
    kl = torch.zeros((), device=policy.device)
    if x.ref_logprobs is not None:
        in_loss = algo.kl_coef > 0 and not algo.kl_in_reward
        logp = x.logprobs if in_loss else x.logprobs.detach()
        kl = aggregate(kl_estimate(logp, x.ref_logprobs, algo.kl_estimator), m, agg)
        if in_loss:
            total = total + algo.kl_coef * kl
    vloss = torch.zeros((), device=policy.device)
    if x.values is not None:
        vloss = value_loss(x.values, x.old_values, x.returns, m, clip=algo.value_clip, agg=agg)
        total = total + algo.value_coef * vloss
    return total, LossStats(policy=float(policy.detach()), entropy=float(ent.detach()), kl=float(kl.detach()),
                            value=float(vloss.detach()), total=float(total.detach()), **st)
