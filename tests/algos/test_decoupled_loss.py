"""Off-policy objectives (algo.off_policy): behaviour weights and AReaL's decoupled PPO, hand-computed, against a
naive per-token loop, selected by rl_objective, with exactly-zero gradient at masked and dropped tokens."""

from __future__ import annotations

import math

import pytest
import torch

from zerotir.algos.losses import (AGG_MODES, OFF_POLICY_MODES, LossInputs, behaviour_weights, check_objective_config,
                                  decoupled_policy_loss, policy_loss, rl_objective)
from zerotir.config import AlgoConfig

T = torch.tensor


def test_behaviour_weights_hand():
    # w = prox/behav = [.5, 1.5, 3, garbage (masked)], cap 2
    behav = T([[-1.0, -1.0, -1.0, -1.0]])
    prox = behav + torch.log(T([[0.5, 1.5, 3.0, 1.0]])) + T([[0.0, 0.0, 0.0, 500.0]])
    mask = T([[1.0, 1.0, 1.0, 0.0]])
    w, capped = behaviour_weights(prox, behav, mask, 2.0, "truncated_is")
    torch.testing.assert_close(w, T([[0.5, 1.5, 2.0, 0.0]]))
    assert capped.tolist() == [[False, False, True, False]]
    w, capped = behaviour_weights(prox, behav, mask, 2.0, "decoupled")
    torch.testing.assert_close(w, T([[0.5, 1.5, 0.0, 0.0]]))             # AReaL drops the token over the cap
    assert capped.tolist() == [[False, False, True, False]]
    w, capped = behaviour_weights(prox, behav, mask, 0.0, "decoupled")   # cap 0: no correction
    torch.testing.assert_close(w, T([[1.0, 1.0, 1.0, 0.0]]))
    assert not capped.any()
    with pytest.raises(ValueError, match="algo.off_policy"):
        behaviour_weights(prox, behav, mask, 2.0, "tis")


def _case():
    """u = current/proximal = [1.5, .5, 1.1, masked garbage]; w = proximal/behaviour = [.5, 1.5, 3, -]; A = [1, 1, -1,
    2]. Behaviour log-probs sit far from both (a stale batch)."""
    behav = T([[-2.0, -2.0, -2.0, -2.0]])
    prox = behav + torch.log(T([[0.5, 1.5, 3.0, 1.0]]))
    logp = (prox + torch.log(T([[1.5, 0.5, 1.1, 1.0]])) + T([[0.0, 0.0, 0.0, 80.0]])).requires_grad_(True)
    return logp, prox, behav, T([[1.0, 1.0, -1.0, 2.0]]), T([[1.0, 1.0, 1.0, 0.0]])


def test_decoupled_hand():
    logp, prox, behav, adv, mask = _case()
    # PPO terms against the proximal policy, clip [.8, 1.28]: max(-1.5, -1.28) = -1.28 (clipped), -.5, 1.1
    # decoupled weights [.5, 1.5, 0 (3 > cap 2: dropped)]: (-.64 - .75 + 0) / 3 sampled tokens
    loss, st = decoupled_policy_loss(logp, prox, behav, adv, mask, cap=2.0, clip_low=0.2, clip_high=0.28)
    assert float(loss.detach()) == pytest.approx((-0.64 - 0.75) / 3, abs=1e-6)
    assert st["tis_clip_fraction"] == pytest.approx(1 / 3)
    assert st["clip_fraction"] == pytest.approx(1 / 3)
    # current / behaviour = u·w = [.75, .75, 3.3]
    assert st["is_ratio_mean"] == pytest.approx((0.75 + 0.75 + 3.3) / 3, abs=1e-5)
    assert st["is_ratio_max"] == pytest.approx(3.3, abs=1e-5)
    loss.backward()
    # d/dlogp of -A·u·w is -A·u·w on unclipped, kept tokens: t1 -1·.5·1.5/3; t0 clipped, t2 dropped, t3 masked: 0
    torch.testing.assert_close(logp.grad, T([[0.0, -0.25, 0.0, 0.0]]))
    assert logp.grad[0, 3].item() == 0.0 and logp.grad[0, 2].item() == 0.0


def test_truncated_is_hand_differs_only_at_the_capped_token():
    logp, prox, behav, adv, mask = _case()
    loss, st = policy_loss(logp, prox, adv, mask, clip_low=0.2, clip_high=0.28, behaviour_logprobs=behav,
                           tis_cap=2.0, off_policy="truncated_is")
    assert float(loss.detach()) == pytest.approx((-0.64 - 0.75 + 2.2) / 3, abs=1e-6)   # t2 weighted min(3, 2)
    assert st["tis_clip_fraction"] == pytest.approx(1 / 3)
    loss.backward()
    torch.testing.assert_close(logp.grad, T([[0.0, -0.25, 1.1 * 2.0 / 3, 0.0]]))


def _naive(logp, prox, behav, adv, mask, cap, clip_low, clip_high, mode, agg):
    """Per-token Python loop of the off-policy objective (floats, math.exp)."""
    rows = []
    for i in range(logp.shape[0]):
        toks = []
        for j in range(logp.shape[1]):
            if mask[i, j] == 0:
                continue
            u = math.exp(float(logp[i, j] - prox[i, j]))
            w = math.exp(float(prox[i, j] - behav[i, j]))
            a = float(adv[i, j])
            ppo = max(-a * u, -a * min(max(u, 1 - clip_low), 1 + clip_high))
            if mode == "truncated_is":
                w = min(w, cap)
            elif w > cap:
                w = 0.0
            toks.append(ppo * w)
        rows.append(toks)
    if agg == "token_mean":
        return sum(sum(r) for r in rows) / max(1, sum(len(r) for r in rows))
    if agg == "seq_mean_token_mean":
        return sum(sum(r) / max(1, len(r)) for r in rows) / len(rows)
    return sum(sum(r) for r in rows) / len(rows)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", OFF_POLICY_MODES)
@pytest.mark.parametrize("agg", AGG_MODES)
def test_vectorized_matches_naive_loop(seed, mode, agg):
    g = torch.Generator().manual_seed(seed)
    b, r = 3, 6
    behav = -torch.rand(b, r, generator=g) * 3
    prox = behav + torch.randn(b, r, generator=g) * 0.8        # some weights above the cap 2, some below
    logp = prox + torch.randn(b, r, generator=g) * 0.3
    adv = torch.randn(b, r, generator=g)
    mask = (torch.rand(b, r, generator=g) > 0.3).float()
    mask[0, 0] = 1.0
    loss, _ = policy_loss(logp, prox, adv, mask, clip_low=0.2, clip_high=0.28, agg=agg, behaviour_logprobs=behav,
                          tis_cap=2.0, off_policy=mode)
    want = _naive(logp, prox, behav, adv, mask, 2.0, 0.2, 0.28, mode, agg)
    assert float(loss) == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_rl_objective_selects_by_algo_off_policy():
    logp, prox, behav, adv, mask = _case()
    x = LossInputs(logprobs=logp, behaviour_logprobs=behav, advantages=adv, mask=mask, entropy=torch.zeros_like(adv),
                   proximal_logprobs=prox)
    kw = dict(clip_low=0.2, clip_high=0.28, tis_cap=2.0)
    dec, st = rl_objective(x, AlgoConfig(off_policy="decoupled", **kw))
    assert float(dec.detach()) == pytest.approx((-0.64 - 0.75) / 3, abs=1e-6) and st.tis_clip_fraction > 0
    tis, _ = rl_objective(x, AlgoConfig(off_policy="truncated_is", **kw))
    assert float(tis.detach()) == pytest.approx((-0.64 - 0.75 + 2.2) / 3, abs=1e-6)
    # without proximal log-probs (an on-policy batch) both modes are plain PPO against the behaviour policy
    on = LossInputs(logprobs=logp, behaviour_logprobs=behav, advantages=adv, mask=mask, entropy=torch.zeros_like(adv))
    a, _ = rl_objective(on, AlgoConfig(off_policy="decoupled", **kw))
    b, _ = rl_objective(on, AlgoConfig(off_policy="truncated_is", **kw))
    assert float(a.detach()) == float(b.detach())


def test_decoupled_masked_garbage_gives_finite_loss_and_zero_gradient():
    logp, prox, behav, adv, mask = _case()
    prox = prox.clone()
    prox[0, 3], behav = float("inf"), behav.clone()
    behav[0, 3] = float("-inf")
    loss, _ = decoupled_policy_loss(logp, prox, behav, adv, mask, cap=2.0, clip_low=0.2, clip_high=0.28)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all() and logp.grad[0, 3].item() == 0.0


def test_check_objective_config():
    check_objective_config(AlgoConfig(off_policy="decoupled"))
    with pytest.raises(ValueError, match="algo.off_policy='areal'"):
        check_objective_config(AlgoConfig(off_policy="areal"))
