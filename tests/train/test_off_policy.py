"""Off-policy correction in the update phase: the learner's own old log-probs + truncated importance sampling
against the rollout (behaviour) log-probs; the on-policy path runs no extra forward and is unchanged."""

import pytest
import torch

from zerotir.train.learner import Learner
from zerotir.train.update import off_policy, update_phase

from .conftest import random_trajs, tiny_cfg
from .test_learner_update import _capture_grads


def test_off_policy_selection():
    from zerotir.config import Config

    cfg = Config()
    cfg.algo.tis_cap = 2.0
    assert not off_policy(cfg)                                    # sync, hf engine, one optimizer step per batch
    for sec, key, val in (("train", "minibatches", 2), ("train", "ppo_epochs", 2), ("rollout", "engine", "vllm")):
        c = Config()
        setattr(getattr(c, sec), key, val)
        assert off_policy(c), key
    c = Config()
    c.train.async_rollout, c.train.max_staleness = True, 1
    assert off_policy(c)
    c.train.max_staleness = 0
    assert not off_policy(c)
    c = Config()
    c.train.minibatches, c.algo.tis_cap = 2, 0.0                   # TIS off: behaviour = old, as before
    assert not off_policy(c)


def test_tis_weights_are_capped_and_scale_the_gradient(tiny_model_dir, tiny_batch):
    _, batch = tiny_batch
    cap = 2.0
    cfg = tiny_cfg(tiny_model_dir, algo__tis_cap=cap, algo__clip_low=0.2, algo__clip_high=0.2)
    learner = Learner(cfg)
    mask = batch.loss_mask
    old = learner.logprobs(batch) * mask                          # the learner's own: ratio current/old = 1
    # behaviour differs from the learner: old/behaviour = 3 (capped to 2) on even columns, 0.5 on odd ones
    w = torch.where(torch.arange(mask.shape[1]) % 2 == 0, torch.tensor(3.0), torch.tensor(0.5)).expand_as(mask)
    behaviour = (old - torch.log(w)) * mask

    tis = batch.replace(proximal_logprobs=old, behaviour_logprobs=behaviour)
    got = _capture_grads(learner)
    stats = learner.update(tis)
    g_tis = dict(got)

    # the same gradient from the plain on-policy loss with each token's advantage scaled by min(w, cap) by hand
    ref = batch.replace(behaviour_logprobs=old, advantages=batch.advantages * torch.clamp(w, max=cap))
    learner2 = Learner(cfg)
    got2 = _capture_grads(learner2)
    learner2.update(ref)
    # ... and not the uncapped one
    unc = batch.replace(behaviour_logprobs=old, advantages=batch.advantages * w)
    learner3 = Learner(cfg)
    got3 = _capture_grads(learner3)
    learner3.update(unc)

    assert g_tis.keys() == got2.keys() and g_tis
    for n in g_tis:
        assert torch.allclose(g_tis[n], got2[n], atol=1e-6, rtol=1e-4), n
    assert any(not torch.allclose(g_tis[n], got3[n], atol=1e-6, rtol=1e-4) for n in g_tis)
    # logged ratio is current / behaviour = w on sampled tokens
    m = mask.bool()
    assert stats["loss/is_ratio_max"] == pytest.approx(3.0, rel=1e-4)
    assert stats["loss/is_ratio_mean"] == pytest.approx(float(w[m].mean()), rel=1e-4)


def _phase(cfg, trajs, learner, calls):
    """update_phase with a recording update and a counting learner.logprobs (no optimizer steps taken)."""
    seen = []
    orig = learner.logprobs

    def logprobs(b):
        calls.append(b.size)
        return orig(b)

    learner.logprobs = logprobs
    learner.update = lambda mb: seen.append(mb) or {}    # record the minibatches instead of stepping
    update_phase(learner, trajs, cfg, step=1)
    return seen


def test_update_phase_on_policy_uses_rollout_logprobs_without_extra_forward(tiny_model_dir):
    from zerotir.models import load_tokenizer
    from zerotir.train.stats import split_minibatches
    from zerotir.types import collate

    tok = load_tokenizer(tiny_model_dir)
    trajs = random_trajs(6, len(tok), seed=3)
    cfg = tiny_cfg(tiny_model_dir)
    learner = Learner(cfg)
    calls = []
    seen = _phase(cfg, trajs, learner, calls)
    assert calls == [] and len(seen) == 1
    rollout = collate(trajs, tok.pad_token_id)
    idx = split_minibatches(rollout.size, 1, (cfg.train.seed, 1, 0))[0]
    assert seen[0].proximal_logprobs is None
    assert torch.equal(seen[0].behaviour_logprobs, rollout.behaviour_logprobs[idx])


def test_update_phase_off_policy_recomputes_old_once_and_keeps_behaviour(tiny_model_dir):
    from zerotir.models import load_tokenizer
    from zerotir.train.stats import split_minibatches
    from zerotir.types import collate

    tok = load_tokenizer(tiny_model_dir)
    trajs = random_trajs(6, len(tok), seed=3)
    cfg = tiny_cfg(tiny_model_dir, train__minibatches=2, train__ppo_epochs=2)
    learner = Learner(cfg)
    calls = []
    seen = _phase(cfg, trajs, learner, calls)
    assert calls == [6] and len(seen) == 4                         # one no-grad forward before the 2 x 2 steps
    rollout = collate(trajs, tok.pad_token_id)
    own = learner.logprobs(rollout) * rollout.loss_mask
    idx = split_minibatches(rollout.size, 2, (cfg.train.seed, 1, 0))[0]
    assert torch.equal(seen[0].behaviour_logprobs, rollout.behaviour_logprobs[idx])
    assert torch.allclose(seen[0].proximal_logprobs, own[idx], atol=1e-6)
    assert not torch.allclose(seen[0].proximal_logprobs, seen[0].behaviour_logprobs)
