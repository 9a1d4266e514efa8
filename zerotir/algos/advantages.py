"""Advantage estimators: pure tensor functions registered by name, and the dispatcher the training loop calls.

    adv = compute_advantages(batch, cfg.algo)  # Advantages(advantages, returns), each [B, R]; the batch is not touched

Every estimator takes the same keyword arguments (and ignores those it does not need) and returns
(advantages [B, R], returns [B, R]), both exactly 0 where mask is 0:

    rewards        [B]    outcome reward per trajectory
    token_rewards  [B, R] per-token reward: the outcome at the LAST SAMPLED token of each row, minus kl_coef·KL on
                          every sampled token when the KL is folded into the reward (algo.kl_in_reward)
    mask           [B, R] 1 on sampled tokens (inserted tool output and padding are 0)
    group_ids      [B]    prompt group of each row
    branch_ids     [B]    sibling group of each row in a tree rollout (tree only; see `tree`)
    values         [B, R] critic values V(s_t) at rollout (gae only)
    gamma, lam, eps       discount, GAE lambda, numerical floor

Time runs over SAMPLED tokens only: an inserted tool-output block is not a step of the MDP (the policy did not act
there), so discounting, return-to-go and GAE's bootstrap all skip mask-0 tokens and chain the last sampled token
before a tool block to the first one after it. Resetting at tool blocks instead (as some TIR code does) cuts every
token before the first tool call off from the outcome reward.

Group estimators (grpo, dr_grpo, rloo, reinforce_pp_baseline, tree): a group of one carries no relative signal; its
advantage is 0. With tree rollouts the leaves of one prompt's trees form its group (`group_ids`), so the group
estimators treat leaves as samples; `tree` also uses the sibling groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from zerotir.algos.losses import kl_estimate

Estimator = Callable[..., tuple[torch.Tensor, torch.Tensor]]
ADVANTAGE_ESTIMATORS: dict[str, Estimator] = {}
TOKEN_REWARD_ESTIMATORS: frozenset[str] = frozenset({"gae", "reinforce_pp", "reinforce_pp_baseline"})
"""Estimators that consume per-token rewards, and so can take a KL penalty folded into the reward."""


def register(name: str) -> Callable[[Estimator], Estimator]:
    def deco(fn: Estimator) -> Estimator:
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn
    return deco


# --------------------------------------------------------------------------------------------------- helpers


def last_sampled_index(mask: torch.Tensor) -> torch.Tensor:
    """[B, R] mask → [B] column of the last 1 in each row (-1 for a row without sampled tokens)."""
    r = mask.shape[-1]
    cols = torch.arange(r, device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), cols, torch.full_like(cols, -1)).max(-1).values


def outcome_token_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] outcome rewards → [B, R] with each reward at its row's last sampled token (rows without one: all 0)."""
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    last = last_sampled_index(mask)
    rows = torch.nonzero(last >= 0).squeeze(-1)
    out[rows, last[rows]] = rewards.float()[rows]
    return out


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) with mean and unbiased variance over mask-1 positions; 0 elsewhere. [B, R]."""
    m = mask.bool()
    n = m.sum()
    if n == 0:
        return torch.zeros_like(x)
    mean = x[m].mean()
    var = ((x[m] - mean) ** 2).sum() / (n - 1).clamp(min=1)
    return torch.where(m, (x - mean) * torch.rsqrt(var + eps), torch.zeros_like(x))


def group_stats(rewards: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row (group mean, group unbiased std, group size), each [B]; std is 0 for groups of one."""
    _, inv = torch.unique(group_ids, return_inverse=True)
    g = int(inv.max()) + 1 if inv.numel() else 0
    r = rewards.float()
    size = torch.zeros(g, dtype=r.dtype, device=r.device).index_add_(0, inv, torch.ones_like(r))
    mean = torch.zeros(g, dtype=r.dtype, device=r.device).index_add_(0, inv, r) / size
    sq = torch.zeros(g, dtype=r.dtype, device=r.device).index_add_(0, inv, (r - mean[inv]) ** 2)
    std = torch.sqrt(sq / (size - 1).clamp(min=1))
    return mean[inv], std[inv], size[inv]


def discounted_returns(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Return-to-go over sampled tokens: G_t = r_t + γ·G_next, next = the following SAMPLED token. [B, R] → [B, R].

    Inserted tokens (mask 0) neither discount nor reset: G carries across them unchanged (and is 0 there)."""
    m = mask.float()
    if gamma == 1.0:   # undiscounted: a reversed cumulative sum (exact, no python loop over columns)
        r = token_rewards.float() * m
        return torch.flip(torch.cumsum(torch.flip(r, [-1]), -1), [-1]) * m
    out = torch.zeros_like(token_rewards, dtype=torch.float32)
    running = torch.zeros(token_rewards.shape[0], dtype=torch.float32, device=token_rewards.device)
    for t in range(token_rewards.shape[1] - 1, -1, -1):
        g = token_rewards[:, t].float() + gamma * running
        running = m[:, t] * g + (1 - m[:, t]) * running
        out[:, t] = m[:, t] * g
    return out


def _broadcast(per_row: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return per_row.float().unsqueeze(-1) * mask.float()


# ------------------------------------------------------------------------------------------------ estimators


@register("gae")
def gae(*, token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 1.0, whiten: bool = True, **_) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over sampled tokens (PPO with a critic).

    token_rewards, values, mask: [B, R]. With t' the next sampled token after t (none after the last: V = 0):
      δ_t = r_t + γ·V(t') - V(t),   A_t = δ_t + γλ·A(t'),   returns_t = A_t + V(t)   (before whitening)
    Inserted tokens are skipped, not reset at. Advantages are then whitened over the batch's sampled tokens
    (whiten=True); returns stay raw (critic targets).
    """
    m = mask.float()
    v = values.float() * m
    if gamma == 1.0 and lam == 1.0:   # the deltas telescope: A_t = G_t - V(t) with G the return-to-go
        returns = discounted_returns(token_rewards, mask, 1.0)
        adv = (returns - v) * m
        return (masked_whiten(adv, mask) if whiten else adv), returns
    b, r = m.shape
    adv = torch.zeros((b, r), dtype=torch.float32, device=m.device)
    next_v = torch.zeros(b, dtype=torch.float32, device=m.device)
    next_a = torch.zeros(b, dtype=torch.float32, device=m.device)
    for t in range(r - 1, -1, -1):
        delta = token_rewards[:, t].float() + gamma * next_v - v[:, t]
        a = delta + gamma * lam * next_a
        mt = m[:, t]
        next_a = mt * a + (1 - mt) * next_a      # mask 0: carry the chain across the inserted token unchanged
        next_v = mt * v[:, t] + (1 - mt) * next_v
        adv[:, t] = mt * a
    returns = (adv + v) * m
    return (masked_whiten(adv, mask) if whiten else adv), returns


@register("grpo")
def grpo(*, rewards: torch.Tensor, mask: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6,
         **_) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO: A_i = (r_i - mean_g) / (std_g + eps) (unbiased group std), the same for every sampled token of row i.
    rewards [B], group_ids [B], mask [B, R] → ([B, R], [B, R]); returns = advantages."""
    mean, std, size = group_stats(rewards, group_ids)
    a = torch.where(size > 1, (rewards.float() - mean) / (std + eps), torch.zeros_like(mean))
    adv = _broadcast(a, mask)
    return adv, adv.clone()


@register("dr_grpo")
def dr_grpo(*, rewards: torch.Tensor, mask: torch.Tensor, group_ids: torch.Tensor,
            **_) -> tuple[torch.Tensor, torch.Tensor]:
    """Dr.GRPO: A_i = r_i - mean_g (no std division; pair with loss_agg=seq_mean_token_sum for no length norm)."""
    mean, _, size = group_stats(rewards, group_ids)
    a = torch.where(size > 1, rewards.float() - mean, torch.zeros_like(mean))
    adv = _broadcast(a, mask)
    return adv, adv.clone()


@register("rloo")
def rloo(*, rewards: torch.Tensor, mask: torch.Tensor, group_ids: torch.Tensor,
         **_) -> tuple[torch.Tensor, torch.Tensor]:
    """RLOO: A_i = r_i - mean of the OTHER samples of the group = n/(n-1)·(r_i - mean_g)."""
    mean, _, size = group_stats(rewards, group_ids)
    a = torch.where(size > 1, size / (size - 1).clamp(min=1) * (rewards.float() - mean), torch.zeros_like(mean))
    adv = _broadcast(a, mask)
    return adv, adv.clone()


@register("reinforce_pp")
def reinforce_pp(*, token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
                 **_) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++: return-to-go of the token rewards (outcome + folded KL) over sampled tokens, then whitened over
    the whole batch's sampled tokens. token_rewards, mask [B, R]; returns = the raw return-to-go."""
    ret = discounted_returns(token_rewards, mask, gamma)
    return masked_whiten(ret, mask), ret


@register("reinforce_pp_baseline")
def reinforce_pp_baseline(*, rewards: torch.Tensor, token_rewards: torch.Tensor, mask: torch.Tensor,
                          group_ids: torch.Tensor, gamma: float = 1.0, **_) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++-baseline (the paper's main setting): subtract the group-mean outcome from each outcome reward,
    then return-to-go (with any folded KL) and global whitening. Groups of one get no outcome signal."""
    mean, _, size = group_stats(rewards, group_ids)
    centred = torch.where(size > 1, rewards.float() - mean, torch.zeros_like(mean))
    shaped = token_rewards.float() - outcome_token_rewards(rewards.float(), mask) + outcome_token_rewards(centred, mask)
    ret = discounted_returns(shaped, mask, gamma)
    return masked_whiten(ret, mask), ret


@register("tree")
def tree(*, rewards: torch.Tensor, mask: torch.Tensor, group_ids: torch.Tensor, branch_ids: torch.Tensor | None = None,
         **_) -> tuple[torch.Tensor, torch.Tensor]:
    """Tree rollouts (TreeRL / ARPO style): A_i = (r_i - mean_sib(i)) + (r_i - mean_root(i)), the same for every
    sampled token of leaf i (no std division, as dr_grpo).

    rewards [B], group_ids [B] (the prompt: all leaves of its trees), branch_ids [B] (the leaf's sibling group: the
    leaves that share its last branch point; `zerotir.rollout.tree.sibling_ids`), mask [B, R] → ([B, R], [B, R]).
    A term whose group has one member is 0 (a leaf that never branched gets only the root term).
    Why both: after the branch point a leaf's tokens are its own and are judged against its siblings (same state,
    same tool output) and the prompt's other leaves. Tokens before it appear in each of the K sibling rows; their
    local terms cancel in the sum over siblings, so the shared prefix gets K·(mean_sib - mean_root): it is credited
    by how its subtree did against the prompt's mean. Returns = advantages.
    """
    if branch_ids is None:
        raise ValueError("algo.name=tree needs TrainBatch.branch_ids (collate fills it from Trajectory.tree_path; "
                         "a hand-built batch must set it), and the batch has none")
    r = rewards.float()
    sib_mean, _, sib_size = group_stats(r, branch_ids)
    root_mean, _, root_size = group_stats(r, group_ids)
    local = torch.where(sib_size > 1, r - sib_mean, torch.zeros_like(r))
    glob = torch.where(root_size > 1, r - root_mean, torch.zeros_like(r))
    adv = _broadcast(local + glob, mask)
    return adv, adv.clone()


# ------------------------------------------------------------------------------------------------ dispatcher


def check_algo_config(cfg) -> None:
    """Raise ValueError naming the field when an AlgoConfig asks for something the estimators cannot do."""
    if cfg.name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"algo.name={cfg.name!r} is not an advantage estimator: {sorted(ADVANTAGE_ESTIMATORS)}")
    if cfg.kl_in_reward and cfg.kl_coef > 0 and cfg.name not in TOKEN_REWARD_ESTIMATORS:
        raise ValueError(f"algo.kl_in_reward needs a per-token estimator ({sorted(TOKEN_REWARD_ESTIMATORS)}), not "
                         f"{cfg.name!r}; set algo.kl_in_reward=false to use the KL as a loss term instead")


@dataclass(frozen=True)
class Advantages:
    """The estimator's output for one batch: advantages and returns, [B, R] float32, exactly 0 where loss_mask is 0.
    `returns` are the critic's targets under gae (for the other estimators they are only reported)."""

    advantages: torch.Tensor
    returns: torch.Tensor


def compute_advantages(batch, cfg) -> Advantages:
    """Advantages of a `TrainBatch` under estimator cfg.name (an `AlgoConfig`); the batch is read, never written.

    Reads batch.rewards [B], batch.group_ids [B], batch.loss_mask [B, R]; batch.values [B, R] for gae;
    batch.branch_ids [B] for tree; and, when cfg.kl_in_reward and cfg.kl_coef > 0, batch.behaviour_logprobs and
    batch.ref_logprobs [B, R]: the KL of the policy that sampled each token to the reference, folded into the
    per-token reward with cfg.kl_estimator.
    """
    check_algo_config(cfg)
    mask = batch.loss_mask.float()
    rewards = batch.rewards.float()
    token_rewards = outcome_token_rewards(rewards, mask)
    if cfg.kl_in_reward and cfg.kl_coef > 0:
        if batch.ref_logprobs is None:
            raise ValueError("algo.kl_in_reward with algo.kl_coef > 0 needs batch.ref_logprobs (reference log-probs)")
        kl = kl_estimate(batch.behaviour_logprobs.float(), batch.ref_logprobs.float(), cfg.kl_estimator)
        token_rewards = token_rewards - cfg.kl_coef * kl * mask
    values = batch.values
    if cfg.name == "gae":
        if values is None:
            raise ValueError("algo.name=gae needs batch.values (critic values at rollout)")
        values = values.float()
    adv, ret = ADVANTAGE_ESTIMATORS[cfg.name](
        rewards=rewards, token_rewards=token_rewards, mask=mask, group_ids=batch.group_ids, values=values,
        gamma=cfg.gamma, lam=cfg.lam, branch_ids=batch.branch_ids)
    return Advantages(advantages=adv * mask, returns=ret * mask)
