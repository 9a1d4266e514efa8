"""Losses: hand-computed examples, vectorized vs naive loops, exactly-zero gradient at masked positions."""

from __future__ import annotations

import math

import pytest
import torch

from zerotir.algos.losses import AGG_MODES, aggregate, entropy_from_logits, kl_estimate, policy_loss, value_loss

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
