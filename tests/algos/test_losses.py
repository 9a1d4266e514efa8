"""Losses: hand-computed examples, vectorized vs naive loops, exactly-zero gradient at masked positions."""

from __future__ import annotations

import math

import pytest
import torch

from zerotir.algos.losses import (AGG_MODES, LossInputs, aggregate, entropy_from_logits, kl_estimate, policy_loss,
                                  rl_objective, value_loss)
from zerotir.config import AlgoConfig

T = torch.tensor


# ------------------------------------------------------------------------------------------ hand-computed


def test_aggregate_hand():
    x = T([[1., 2, 3], [4, 5, 6]])
    m = T([[1., 1, 0], [1, 0, 0]])
    assert float(aggregate(x, m, "token_mean")) == pytest.approx(7 / 3)            # (1+2+4)/3
    assert float(aggregate(x, m, "seq_mean_token_mean")) == pytest.approx(2.75)    # (1.5 + 4)/2
    assert float(aggregate(x, m, "seq_mean_token_sum")) == pytest.approx(3.5)      # (3 + 4)/2
    with pytest.raises(ValueError, match="loss_agg"):
        aggregate(x, m, "mean")


def _pl_inputs():
    # ratios [1.5, .5, 1.1, garbage-masked], advantages [1, 1, -1, 2]
    old = T([[-1.0, -1.0, -1.0, -1.0]])
    logp = (old + torch.log(T([[1.5, 0.5, 1.1, 1.0]])) + T([[0., 0, 0, 50.0]])).requires_grad_(True)
    adv = T([[1.0, 1.0, -1.0, 2.0]])
    mask = T([[1., 1, 1, 0]])
    return logp, old, adv, mask


def test_policy_loss_hand_clip_higher():
    # t0: max(-1.5, -1.28) = -1.28 (clipped at 1+.28); t1: max(-.5, -.8) = -.5; t2: max(1.1, 1.1) = 1.1
    logp, old, adv, mask = _pl_inputs()
    loss, st = policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    assert float(loss.detach()) == pytest.approx((-1.28 - 0.5 + 1.1) / 3, abs=1e-6)
    assert st["clip_fraction"] == pytest.approx(1 / 3)
    assert st["is_ratio_max"] == pytest.approx(1.5, abs=1e-5)
    assert st["is_ratio_mean"] == pytest.approx((1.5 + 0.5 + 1.1) / 3, abs=1e-5)
    # k3 of KL(old||cur) per token: 1/r - 1 + log r
    k3 = [1 / r - 1 + math.log(r) for r in (1.5, 0.5, 1.1)]
    assert st["approx_kl"] == pytest.approx(sum(k3) / 3, abs=1e-5)
    loss.backward()
    # d/dlogp of -A·r is -A·r on unclipped tokens; the clipped token and the masked token get 0
    torch.testing.assert_close(logp.grad, T([[0.0, -0.5 / 3, 1.1 / 3, 0.0]]))
    assert logp.grad[0, 3].item() == 0.0


def test_policy_loss_hand_symmetric_clip_changes_t0():
    logp, old, adv, mask = _pl_inputs()
    loss, _ = policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    assert float(loss.detach()) == pytest.approx((-1.2 - 0.5 + 1.1) / 3, abs=1e-6)


def test_policy_loss_dual_clip_hand():
    # ratio 4, A=-1: PPO term max(4, 1.28) = 4; dual clip c=3 bounds it to 3 (and its gradient to 0)
    logp = torch.log(T([[4.0, 1.0]])).requires_grad_(True)
    old, adv, mask = torch.zeros(1, 2), T([[-1.0, 1.0]]), torch.ones(1, 2)
    loss, st = policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, dual_clip=3.0)
    assert float(loss.detach()) == pytest.approx((3.0 - 1.0) / 2)
    assert st["dual_clip_fraction"] == pytest.approx(0.5)
    loss.backward()
    torch.testing.assert_close(logp.grad, T([[0.0, -0.5]]))
    no_dual, _ = policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    assert float(no_dual.detach()) == pytest.approx((4.0 - 1.0) / 2)
    with pytest.raises(ValueError, match="dual_clip"):
        policy_loss(logp, old, adv, mask, dual_clip=0.5)


def test_policy_loss_truncated_importance_sampling_hand():
    # learner old policy vs behaviour: exp(old - beh) = [3, .5] → weights min(·, 2) = [2, .5]; ratio 1, A = 1
    logp = torch.zeros(1, 2, requires_grad=True)
    old = torch.zeros(1, 2)
    beh = -torch.log(T([[3.0, 0.5]]))
    adv, mask = torch.ones(1, 2), torch.ones(1, 2)
    loss, st = policy_loss(logp, old, adv, mask, behaviour_logprobs=beh, tis_cap=2.0)
    assert float(loss.detach()) == pytest.approx(-(2.0 + 0.5) / 2)
    assert st["tis_clip_fraction"] == pytest.approx(0.5)
    assert st["is_ratio_max"] == pytest.approx(3.0, rel=1e-5)      # current / behaviour
    loss.backward()
    torch.testing.assert_close(logp.grad, T([[-1.0, -0.25]]))
    off, _ = policy_loss(logp, old, adv, mask, behaviour_logprobs=beh, tis_cap=0.0)
    assert float(off.detach()) == pytest.approx(-1.0)


def test_kl_estimators_hand():
    logp, ref = T([[-1.0]]), T([[-2.0]])
    assert float(kl_estimate(logp, ref, "k1")) == pytest.approx(1.0)
    assert float(kl_estimate(logp, ref, "k2")) == pytest.approx(0.5)
    assert float(kl_estimate(logp, ref, "k3")) == pytest.approx(math.exp(-1.0), abs=1e-6)   # e^-1 - 1 + 1
    assert float(kl_estimate(ref, ref, "k3")) == 0.0
    with pytest.raises(ValueError, match="kl_estimator"):
        kl_estimate(logp, ref, "k4")


def test_entropy_hand():
    h = entropy_from_logits(T([[0.0, 0.0], [0.0, math.log(3.0)]]))
    torch.testing.assert_close(h, T([math.log(2.0), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]))


def test_value_loss_hand():
    # t0: max((1-2)², (0.7-2)²)=1.69 → .845;  t1: max(0², (0.3-0)²)=.09 → .045;  t2 masked
    v = T([[1.0, 0.0, 7.0]], requires_grad=True)
    old, ret, mask = T([[0.5, 0.5, 0.0]]), T([[2.0, 0.0, -3.0]]), T([[1., 1, 0]])
    loss = value_loss(v, old, ret, mask, clip=0.2)
    assert float(loss.detach()) == pytest.approx((0.845 + 0.045) / 2)
    loss.backward()
    # both tokens take the clipped branch: its gradient w.r.t. v is 0 (clamp saturated)
    torch.testing.assert_close(v.grad, T([[0.0, 0.0, 0.0]]))
    assert float(value_loss(v, old, ret, mask, clip=0.0).detach()) == pytest.approx((0.5 * 1 + 0.0) / 2)


# ------------------------------------------------------------------------------ the whole objective, by hand

G = 1e4   # garbage in masked positions: it must change nothing


def _objective_inputs(**over) -> LossInputs:
    """2 x 3, sampled tokens (0,0) (0,1) (1,0) (1,2); (0,2) and (1,1) are masked and hold garbage.
    ratios 1, 1.5, 1, .5; advantages 1, 2, -1, .5; logp - ref = .1, .2, .3, .4; entropy .5, 1, 1.5, 2;
    values 1, 2, 0, 1 with old values 1, 2, 0, .5 and returns 2, 2, 1, 2."""
    beh = T([[-1.0, -2.0, G], [-0.5, G, -1.5]])
    logp = (beh + torch.log(T([[1.0, 1.5, 1.0], [1.0, 1.0, 0.5]]))).requires_grad_(True)
    kw = dict(logprobs=logp, behaviour_logprobs=beh, mask=T([[1., 1, 0], [1, 0, 1]]),
              advantages=T([[1.0, 2.0, G], [-1.0, G, 0.5]]),
              entropy=T([[0.5, 1.0, G], [1.5, G, 2.0]], requires_grad=True),
              ref_logprobs=logp.detach() - T([[0.1, 0.2, -G], [0.3, -G, 0.4]]),
              values=T([[1.0, 2.0, G], [0.0, G, 1.0]], requires_grad=True),
              old_values=T([[1.0, 2.0, -G], [0.0, -G, 0.5]]), returns=T([[2.0, 2.0, G], [1.0, G, 2.0]]))
    kw.update(over)
    return LossInputs(**kw)


ALGO = dict(clip_low=0.2, clip_high=0.2, loss_agg="token_mean", entropy_coef=0.01, kl_coef=0.1, kl_estimator="k2",
            value_coef=0.5, value_clip=0.2, tis_cap=2.0)


@pytest.mark.parametrize("kl_in_reward", [False, True])
def test_rl_objective_hand_computed_every_coefficient(kl_in_reward):
    """policy per token: max(-A·r, -A·clip(r, .8, 1.2)) = -1, -2.4 (clipped), 1, -.25      → mean -.6625
    entropy mean (.5 + 1 + 1.5 + 2)/4 = 1.25;  k2 KL ½(.1² + .2² + .3² + .4²)/4 = .0375
    value ½·max((v-G)², (v_clip-G)²) = .5, 0, .5, ½·max(1, 1.7²)=.845                   → mean .46125
    total = -.6625 - .01·1.25 + .1·.0375 (only when the KL is not in the reward) + .5·.46125"""
    x = _objective_inputs()
    loss, st = rl_objective(x, AlgoConfig(kl_in_reward=kl_in_reward, **ALGO))
    kl_term = 0.0 if kl_in_reward else 0.1 * 0.0375
    assert float(loss.detach()) == pytest.approx(-0.6625 - 0.0125 + kl_term + 0.230625, abs=1e-6)
    assert st.total == pytest.approx(float(loss.detach()))
    assert (st.policy, st.entropy, st.kl, st.value) == pytest.approx((-0.6625, 1.25, 0.0375, 0.46125), abs=1e-6)
    assert st.clip_fraction == 0.25 and st.is_ratio_mean == pytest.approx(1.0) and st.is_ratio_max == pytest.approx(1.5)
    loss.backward()
    # d/dlogp = policy (-A·r/4 where unclipped) + KL in the loss (kl_coef·(logp - ref)/4)
    pol = T([[-0.25, 0.0, 0.0], [0.25, 0.0, -0.0625]])
    kl = 0.0 if kl_in_reward else 0.1 * T([[0.1, 0.2, 0.0], [0.3, 0.0, 0.4]]) / 4
    torch.testing.assert_close(x.logprobs.grad, pol + kl)
    torch.testing.assert_close(x.entropy.grad, -0.01 / 4 * x.mask)
    # (v - G)·value_coef/4 where the unclipped branch holds; 0 on the clipped token (1,2)
    torch.testing.assert_close(x.values.grad, T([[-0.125, 0.0, 0.0], [-0.125, 0.0, 0.0]]))


def test_rl_objective_terms_switch_off():
    """No reference, no critic, no entropy bonus: the objective is the policy loss alone (and reports 0 KL/value)."""
    x = _objective_inputs(ref_logprobs=None, values=None, old_values=None, returns=None)
    loss, st = rl_objective(x, AlgoConfig(**{**ALGO, "entropy_coef": 0.0}))
    assert float(loss.detach()) == pytest.approx(-0.6625) and st.kl == 0.0 and st.value == 0.0
    assert st.entropy == pytest.approx(1.25)                 # still reported


def test_rl_objective_proximal_logprobs_set_the_ratio_and_tis_weights():
    """Off-policy: the ratio is taken against the proximal log-probs (here = current, ratio 1), each token weighted
    by min(proximal/behaviour, tis_cap): w = 3 → 2 and .5; advantages 1 and 1 → loss -(2 + .5)/2."""
    logp = torch.zeros(1, 2, requires_grad=True)
    x = LossInputs(logprobs=logp, behaviour_logprobs=-torch.log(T([[3.0, 0.5]])), advantages=torch.ones(1, 2),
                   mask=torch.ones(1, 2), entropy=torch.zeros(1, 2), proximal_logprobs=torch.zeros(1, 2))
    loss, st = rl_objective(x, AlgoConfig(**ALGO))
    assert float(loss.detach()) == pytest.approx(-1.25)
    assert st.tis_clip_fraction == 0.5 and st.is_ratio_max == pytest.approx(3.0, rel=1e-5)
    on_policy, _ = rl_objective(LossInputs(logprobs=logp, behaviour_logprobs=torch.zeros(1, 2),
                                           advantages=torch.ones(1, 2), mask=torch.ones(1, 2),
                                           entropy=torch.zeros(1, 2)), AlgoConfig(**ALGO))
    assert float(on_policy.detach()) == pytest.approx(-1.0)


def test_loss_inputs_name_the_bad_field():
    with pytest.raises(ValueError, match=r"LossInputs.advantages: shape \(2, 2\), expected \(2, 3\)"):
        _objective_inputs(advantages=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="old_values and returns"):
        _objective_inputs(returns=None)


# ------------------------------------------------------------------------------------ naive reference loops


def naive_aggregate(x, m, mode):
    rows = [[x[i][t] for t in range(len(x[i])) if m[i][t]] for i in range(len(x))]
    if mode == "token_mean":
        n = sum(len(r) for r in rows)
        return sum(sum(r) for r in rows) / max(n, 1)
    if mode == "seq_mean_token_mean":
        return sum(sum(r) / max(len(r), 1) for r in rows) / len(rows)
    return sum(sum(r) for r in rows) / len(rows)


def naive_policy_tokens(logp, old, adv, m, cl, ch, dual):
    out = []
    for i in range(len(logp)):
        row = []
        for t in range(len(logp[i])):
            if not m[i][t]:
                row.append(0.0)
                continue
            r = math.exp(logp[i][t] - old[i][t])
            a = adv[i][t]
            loss = max(-a * r, -a * min(max(r, 1 - cl), 1 + ch))
            if dual and a < 0:
                loss = min(loss, -a * dual)
            row.append(loss)
        out.append(row)
    return out


def rand(seed):
    g = torch.Generator().manual_seed(seed)
    b, r = int(torch.randint(1, 7, (1,), generator=g)), int(torch.randint(1, 11, (1,), generator=g))
    mask = (torch.rand(b, r, generator=g) < 0.6).float()
    return g, b, r, mask


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("agg", AGG_MODES)
def test_policy_loss_matches_naive(seed, agg):
    g, b, r, mask = rand(seed)
    old = -torch.rand(b, r, generator=g) * 4
    logp = old + 0.5 * torch.randn(b, r, generator=g)
    adv = torch.randn(b, r, generator=g)
    dual = 3.0 if seed % 2 else 0.0
    loss, _ = policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, dual_clip=dual, agg=agg)
    toks = naive_policy_tokens(logp.tolist(), old.tolist(), adv.tolist(), mask.tolist(), 0.2, 0.28, dual)
    assert float(loss.detach()) == pytest.approx(naive_aggregate(toks, mask.tolist(), agg), abs=1e-5, rel=1e-5)


@pytest.mark.parametrize("seed", range(10))
def test_value_kl_entropy_match_naive(seed):
    g, b, r, mask = rand(seed)
    v, old, ret = (torch.randn(b, r, generator=g) for _ in range(3))
    want = [[0.5 * max((v[i, t] - ret[i, t]) ** 2,
                       (old[i, t] + min(max(v[i, t] - old[i, t], -0.2), 0.2) - ret[i, t]) ** 2).item()
             for t in range(r)] for i in range(b)]
    assert float(value_loss(v, old, ret, mask, 0.2, "seq_mean_token_mean")) == pytest.approx(
        naive_aggregate(want, mask.tolist(), "seq_mean_token_mean"), abs=1e-5)
    lp, rf = -torch.rand(b, r, generator=g) * 3, -torch.rand(b, r, generator=g) * 3
    k3 = kl_estimate(lp, rf, "k3")
    for i in range(b):
        for t in range(r):
            d = (rf[i, t] - lp[i, t]).item()
            assert k3[i, t].item() == pytest.approx(math.exp(d) - 1 - d, abs=1e-5)
    logits = torch.randn(b, r, 5, generator=g)
    h = entropy_from_logits(logits)
    for i in range(b):
        for t in range(r):
            z = logits[i, t].tolist()
            s = sum(math.exp(u) for u in z)
            assert h[i, t].item() == pytest.approx(-sum(math.exp(u) / s * math.log(math.exp(u) / s) for u in z),
                                                   abs=1e-5)


# ------------------------------------------------------------------------------- masked positions: zero grad


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("agg", AGG_MODES)
def test_masked_positions_get_exactly_zero_gradient(seed, agg):
    g, b, r, mask = rand(seed)
    mask[0, 0] = 0.0
    junk = torch.where(mask.bool(), torch.zeros(b, r), torch.full((b, r), 1e4))   # garbage where masked
    logp = (-torch.rand(b, r, generator=g) + junk).requires_grad_(True)
    old = -torch.rand(b, r, generator=g) - junk
    ref = -torch.rand(b, r, generator=g) - junk
    adv = torch.randn(b, r, generator=g) + junk
    v = (torch.randn(b, r, generator=g) + junk).requires_grad_(True)
    beh = old - 0.3 * torch.rand(b, r, generator=g) - junk
    pl, _ = policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, dual_clip=3.0, agg=agg,
                        behaviour_logprobs=beh, tis_cap=2.0)
    total = pl + aggregate(kl_estimate(logp, ref, "k3"), mask, agg) + aggregate(kl_estimate(logp, ref, "k2"), mask,
                                                                                  agg)
    total = total + value_loss(v, old, adv, mask, 0.2, agg)
    total.backward()
    masked = mask == 0
    assert torch.isfinite(logp.grad).all() and torch.isfinite(v.grad).all()
    assert torch.all(logp.grad[masked] == 0) and torch.all(v.grad[masked] == 0)
    if mask.sum() > 0:
        assert logp.grad[~masked].abs().sum() > 0
