"""Advantage estimators: hand-computed examples, vectorized vs naive loops, the GAE-across-tools regression."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from zerotir.algos.advantages import (ADVANTAGE_ESTIMATORS, compute_advantages, discounted_returns, gae,
                                      group_stats, last_sampled_index, masked_whiten, outcome_token_rewards)
from zerotir.config import AlgoConfig
from zerotir.types import TrainBatch

T = torch.tensor


def make_batch(rewards, mask, group_ids, values=None, old=None, ref=None) -> TrainBatch:
    mask = T(mask, dtype=torch.float32)
    b, r = mask.shape
    return TrainBatch(prompt_ids=torch.zeros(b, 1, dtype=torch.long), prompt_mask=torch.ones(b, 1, dtype=torch.long),
                      response_ids=torch.zeros(b, r, dtype=torch.long), response_mask=torch.ones(b, r, dtype=torch.long),
                      loss_mask=mask, behaviour_logprobs=T(old) if old is not None else torch.zeros(b, r),
                      rewards=T(rewards, dtype=torch.float32), group_ids=T(group_ids),
                      policy_version=torch.zeros(b, dtype=torch.long),
                      values=T(values) if values is not None else None, ref_logprobs=T(ref) if ref is not None else None)


def run(name, batch, **kw):
    out = compute_advantages(batch, AlgoConfig(name=name, **kw))
    return out.advantages, out.returns


def test_registry_names():
    assert set(ADVANTAGE_ESTIMATORS) == {"gae", "grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline",
                                         "tree"}


# ------------------------------------------------------------------------------------------ hand-computed


GROUPED = dict(rewards=[1, 0, 0, 1, 1, 1, 0, 1], group_ids=[0, 0, 0, 0, 1, 1, 1, 2],
               mask=[[1, 1, 0]] * 8)


def test_grpo_hand():
    # group 0 [1,0,0,1]: mean .5, unbiased std sqrt(1/3) → ±.5/.57735 = ±.866025
    # group 1 [1,1,0]: mean 2/3, std sqrt(1/3) → +.57735, -1.154701; group 2 has one member → 0
    adv, ret = run("grpo", make_batch(**GROUPED))
    want = [0.866025, -0.866025, -0.866025, 0.866025, 0.57735, 0.57735, -1.154701, 0.0]
    torch.testing.assert_close(adv[:, 0], T(want), atol=1e-5, rtol=0)
    torch.testing.assert_close(adv[:, 1], T(want), atol=1e-5, rtol=0)
    assert torch.all(adv[:, 2] == 0) and torch.equal(ret, adv)


def test_dr_grpo_hand():
    adv, _ = run("dr_grpo", make_batch(**GROUPED))
    torch.testing.assert_close(adv[:, 0], T([.5, -.5, -.5, .5, 1 / 3, 1 / 3, -2 / 3, 0.0]))


def test_rloo_hand():
    # group 0: 1 - mean(others)=1-1/3=2/3, 0-2/3; group 1: 1-(1+0)/2=.5, 0-1=-1
    adv, _ = run("rloo", make_batch(**GROUPED))
    torch.testing.assert_close(adv[:, 0], T([2 / 3, -2 / 3, -2 / 3, 2 / 3, .5, .5, -1.0, 0.0]))


def test_reinforce_pp_hand():
    # returns-to-go row0 [1,1,·,1], row1 [0,0,0,·]; whiten 6 tokens: mean .5, unbiased var .3
    adv, ret = run("reinforce_pp", make_batch(rewards=[1, 0], mask=[[1, 1, 0, 1], [1, 1, 1, 0]], group_ids=[0, 0]))
    torch.testing.assert_close(ret, T([[1., 1, 0, 1], [0, 0, 0, 0]]))
    z = 0.5 / math.sqrt(0.3)
    torch.testing.assert_close(adv, T([[z, z, 0, z], [-z, -z, -z, 0]]), atol=1e-5, rtol=0)


def test_reinforce_pp_kl_in_reward_hand():
    # k1 = old - ref = [.5, 0, -.5]; token rewards -0.1·k1 + outcome 1 at the last sampled token:
    # [-.05, 0, 1.05] → return-to-go [1.0, 1.05, 1.05]
    b = make_batch(rewards=[1.0], mask=[[1, 1, 1]], group_ids=[0], old=[[-1., -1, -1]], ref=[[-1.5, -1, -.5]])
    _, ret = run("reinforce_pp", b, kl_coef=0.1, kl_in_reward=True, kl_estimator="k1")
    torch.testing.assert_close(ret, T([[1.0, 1.05, 1.05]]))


def test_reinforce_pp_baseline_hand():
    # group mean 1/3 → centred [2/3, -1/3, -1/3]; whiten 6 tokens: mean 0, unbiased var 4/15
    adv, ret = run("reinforce_pp_baseline", make_batch(rewards=[1, 0, 0], mask=[[1, 1]] * 3, group_ids=[5, 5, 5]))
    torch.testing.assert_close(ret[:, 0], T([2 / 3, -1 / 3, -1 / 3]))
    s = math.sqrt(4 / 15)
    torch.testing.assert_close(adv[:, 1], T([2 / 3 / s, -1 / 3 / s, -1 / 3 / s]), atol=1e-5, rtol=0)


def test_discounted_returns_skip_inserted_tokens():
    # γ=.5 over sampled tokens only: col 3 = 1, col 1 = .5 (col 2 is a tool token, no discount), col 0 = .25
    g = discounted_returns(T([[0., 0, 0, 1]]), T([[1., 1, 0, 1]]), gamma=0.5)
    torch.testing.assert_close(g, T([[.25, .5, 0, 1]]))


def test_gae_hand():
    # mask [1,1,0,0,1], V=[.5,.4,(9),(9),.8], R=1 at col 4, γ=.9 λ=.5:
    # δ4=1-.8=.2, A4=.2; δ1=.9·.8-.4=.32, A1=.32+.45·.2=.41; δ0=.9·.4-.5=-.14, A0=-.14+.45·.41=.0445
    mask = T([[1., 1, 0, 0, 1]])
    tr = outcome_token_rewards(T([1.0]), mask)
    adv, ret = gae(token_rewards=tr, values=T([[.5, .4, 9, 9, .8]]), mask=mask, gamma=0.9, lam=0.5, whiten=False)
    torch.testing.assert_close(adv, T([[.0445, .41, 0, 0, .2]]))
    torch.testing.assert_close(ret, T([[.5445, .81, 0, 0, 1.0]]))


def test_gae_dispatcher_whitens_and_returns_raw():
    b = make_batch(rewards=[1.0, 0.0], mask=[[1, 1, 0, 0, 1], [1, 1, 1, 0, 0]], group_ids=[0, 0],
                   values=[[.5, .4, 9, 9, .8], [.1, .2, .3, 9, 9]])
    adv, ret = run("gae", b, gamma=0.9, lam=0.5)
    torch.testing.assert_close(ret[0], T([.5445, .81, 0, 0, 1.0]))
    m = b.loss_mask.bool()
    assert abs(float(adv[m].mean())) < 1e-6 and abs(float(adv[m].std()) - 1) < 1e-4
    assert torch.all(adv[~m] == 0) and torch.all(ret[~m] == 0)


def _gae_reset_at_tool(rewards, values, mask, gamma, lam):
    """The variant some TIR code ships: the GAE chain restarts at every inserted (tool) token."""
    b, r = mask.shape
    adv = torch.zeros(b, r)
    for i in range(b):
        last, next_v = 0.0, 0.0
        for t in reversed(range(r)):
            if mask[i, t] == 0:
                last, next_v = 0.0, 0.0        # reset: the outcome never crosses the tool block
                continue
            delta = rewards[i, t] + gamma * next_v - values[i, t]
            last = float(delta + gamma * lam * last)
            next_v = float(values[i, t])
            adv[i, t] = last
    return adv


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.5, 0.5)])
def test_gae_reaches_tokens_before_a_tool_call_and_reset_variant_starves_them(gamma, lam):
    # tokens 0-1 write code, 2-3 are the tool output, 4-5 write the boxed answer; outcome 1, critic 0.
    # γ=λ=1: every sampled token gets 1. γ=λ=.5 (γλ=.25 per SAMPLED step, tool tokens are not steps):
    # A5=1, A4=.25, A1=.0625, A0=.015625.
    mask = T([[1., 1, 0, 0, 1, 1]])
    tr = outcome_token_rewards(T([1.0]), mask)
    values = torch.zeros(1, 6)
    ours, _ = gae(token_rewards=tr, values=values, mask=mask, gamma=gamma, lam=lam, whiten=False)
    want = [1., 1, 0, 0, 1, 1] if gamma == 1.0 else [.015625, .0625, 0, 0, .25, 1]
    torch.testing.assert_close(ours, T([want]))
    reset = _gae_reset_at_tool(tr, values, mask, gamma, lam)
    torch.testing.assert_close(reset[0, :2], T([0., 0]))          # the code-writing tokens get no signal
    torch.testing.assert_close(reset[0, 4:], T(want[4:], dtype=torch.float32))


def test_helpers():
    mask = T([[1., 1, 0, 1, 0], [0., 0, 0, 0, 0], [1., 0, 0, 0, 0]])
    assert last_sampled_index(mask).tolist() == [3, -1, 0]
    torch.testing.assert_close(outcome_token_rewards(T([2., 3, 4]), mask),
                               T([[0., 0, 0, 2, 0], [0] * 5, [4., 0, 0, 0, 0]]))
    mean, std, size = group_stats(T([1., 3, 5, 7]), T([9, 9, 4, 9]))
    torch.testing.assert_close(mean, T([11 / 3, 11 / 3, 5, 11 / 3]))
    torch.testing.assert_close(size, T([3., 3, 1, 3]))
    assert float(std[2]) == 0.0


def test_config_errors():
    b = make_batch(rewards=[1.0], mask=[[1]], group_ids=[0])
    with pytest.raises(ValueError, match="algo.name"):
        run("ppo2", b)
    with pytest.raises(ValueError, match="kl_in_reward"):
        run("grpo", b, kl_coef=0.1, kl_in_reward=True)
    with pytest.raises(ValueError, match="values"):
        run("gae", b)
    with pytest.raises(ValueError, match="ref_logprobs"):
        run("reinforce_pp", b, kl_coef=0.1, kl_in_reward=True)
    with pytest.raises(ValueError, match="branch_ids"):     # a hand-built batch; collate always fills them
        run("tree", b)


# ------------------------------------------------------------------------------------ naive reference loops


def naive_whiten(x, mask):
    vals = [x[i][t] for i in range(len(x)) for t in range(len(x[i])) if mask[i][t]]
    if not vals:
        return [[0.0] * len(row) for row in x]
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / max(len(vals) - 1, 1)
    return [[(x[i][t] - mean) / math.sqrt(var + 1e-8) if mask[i][t] else 0.0 for t in range(len(x[i]))]
            for i in range(len(x))]


def naive_token_rewards(rewards, mask, kl=None, kl_coef=0.0):
    out = []
    for i, row in enumerate(mask):
        tr = [(-kl_coef * kl[i][t] if kl is not None and row[t] else 0.0) for t in range(len(row))]
        idx = [t for t, m in enumerate(row) if m]
        if idx:
            tr[idx[-1]] += rewards[i]
        out.append(tr)
    return out


def naive_returns(tr, mask, gamma):
    out = []
    for i, row in enumerate(mask):
        g, ret = 0.0, [0.0] * len(row)
        for t in reversed([t for t, m in enumerate(row) if m]):
            g = tr[i][t] + gamma * g
            ret[t] = g
        out.append(ret)
    return out


def naive_gae(tr, values, mask, gamma, lam):
    adv_out, ret_out = [], []
    for i, row in enumerate(mask):
        idx = [t for t, m in enumerate(row) if m]
        adv, ret, last = [0.0] * len(row), [0.0] * len(row), 0.0
        for k in reversed(range(len(idx))):
            t = idx[k]
            nv = values[i][idx[k + 1]] if k + 1 < len(idx) else 0.0
            last = tr[i][t] + gamma * nv - values[i][t] + gamma * lam * last
            adv[t], ret[t] = last, last + values[i][t]
        adv_out.append(adv)
        ret_out.append(ret)
    return adv_out, ret_out


def naive_group(rewards, group_ids, kind):
    out = []
    for i, r in enumerate(rewards):
        g = [rewards[j] for j in range(len(rewards)) if group_ids[j] == group_ids[i]]
        if len(g) < 2:
            out.append(0.0)
            continue
        mean = sum(g) / len(g)
        if kind == "grpo":
            out.append((r - mean) / (statistics.stdev(g) + 1e-6))
        elif kind == "dr_grpo":
            out.append(r - mean)
        elif kind == "rloo":
            out.append(r - (sum(g) - r) / (len(g) - 1))
        else:  # centred outcome for reinforce_pp_baseline
            out.append(r - mean)
    return out


def random_case(seed):
    g = torch.Generator().manual_seed(seed)
    b = int(torch.randint(1, 9, (1,), generator=g))
    r = int(torch.randint(1, 13, (1,), generator=g))
    mask = (torch.rand(b, r, generator=g) < 0.7).float()
    lengths = torch.randint(0, r + 1, (b,), generator=g)
    mask = mask * (torch.arange(r) < lengths[:, None]).float()   # right padding
    rewards = torch.randint(0, 2, (b,), generator=g).float() + 0.25 * torch.randn(b, generator=g) * (seed % 2)
    groups = torch.randint(0, 3, (b,), generator=g)
    values = torch.randn(b, r, generator=g)
    old = -torch.rand(b, r, generator=g) * 3
    ref = -torch.rand(b, r, generator=g) * 3
    gamma = float(torch.rand(1, generator=g)) * 0.5 + 0.5
    lam = float(torch.rand(1, generator=g))
    if seed % 4 == 1:     # the undiscounted fast paths (γ = 1, and γ = λ = 1 for GAE)
        gamma, lam = 1.0, 1.0
    elif seed % 4 == 2:
        gamma = 1.0
    return mask, rewards, groups, values, old, ref, gamma, lam


@pytest.mark.parametrize("name", sorted(set(ADVANTAGE_ESTIMATORS) - {"tree"}))  # tree: test_tree_advantages.py
@pytest.mark.parametrize("seed", range(12))
def test_vectorized_matches_naive(name, seed):
    mask, rewards, groups, values, old, ref, gamma, lam = random_case(seed)
    kl_on = name in ("gae", "reinforce_pp", "reinforce_pp_baseline") and seed % 3 == 0
    cfg = AlgoConfig(name=name, gamma=gamma, lam=lam, kl_coef=0.05 if kl_on else 0.0, kl_in_reward=kl_on,
                     kl_estimator="k2")
    batch = TrainBatch(prompt_ids=None, prompt_mask=None, response_ids=None, response_mask=None, loss_mask=mask,
                       behaviour_logprobs=old * mask, rewards=rewards, group_ids=groups, policy_version=None,
                       values=values, ref_logprobs=ref)
    out = compute_advantages(batch, cfg)
    M, R, G = mask.tolist(), rewards.tolist(), groups.tolist()
    kl = (0.5 * (ref - old * mask) ** 2).tolist() if kl_on else None
    if name in ("grpo", "dr_grpo", "rloo"):
        a = naive_group(R, G, name)
        want_adv = [[a[i] if M[i][t] else 0.0 for t in range(len(M[i]))] for i in range(len(M))]
        want_ret = want_adv
    elif name == "gae":
        tr = naive_token_rewards(R, M, kl, cfg.kl_coef)
        raw, want_ret = naive_gae(tr, values.tolist(), M, gamma, lam)
        want_adv = naive_whiten(raw, M)
    else:
        base = naive_group(R, G, "centred") if name == "reinforce_pp_baseline" else R
        tr = naive_token_rewards(base, M, kl, cfg.kl_coef)
        want_ret = naive_returns(tr, M, gamma)
        want_adv = naive_whiten(want_ret, M)
    torch.testing.assert_close(out.advantages, T(want_adv).reshape(mask.shape), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.returns, T(want_ret).reshape(mask.shape), atol=1e-4, rtol=1e-4)
    assert torch.all(out.advantages[mask == 0] == 0) and torch.all(out.returns[mask == 0] == 0)
    assert batch.advantages is None and batch.returns is None      # the batch is read, never written


def test_masked_whiten_matches_naive():
    x = torch.randn(4, 6)
    m = (torch.rand(4, 6) < 0.6).float()
    torch.testing.assert_close(masked_whiten(x, m), T(naive_whiten(x.tolist(), m.tolist())), atol=1e-5, rtol=1e-5)
