"""Learner.update on the tiny model: parameters move, masked tokens get exactly zero gradient, micro-batching does
not change the gradient, the critic trains under GAE."""

import pytest
import torch

from zerotir.train.learner import Learner

from .conftest import tiny_cfg


def _capture_grads(learner):
    """Replace the optimizer step by a copy of the accumulated gradients (so the test sees what would be applied)."""
    got = {}

    def step(*a, **k):
        learner.optimizer._opt_called = True  # what torch's own step wrapper records for the scheduler
        for n, p in learner.policy.named_parameters():
            if p.grad is not None:
                got[n] = p.grad.detach().clone()

    step._wrapped_by_lr_sched = True  # the stand-in is deliberate: torch's scheduler would warn it was overridden
    learner.optimizer.step = step
    return got


def test_update_changes_parameters_and_reports_metrics(tiny_model_dir, tiny_batch):
    _, batch = tiny_batch
    learner = Learner(tiny_cfg(tiny_model_dir))
    before = {n: p.detach().clone() for n, p in learner.policy.named_parameters()}
    stats = learner.update(batch)
    changed = [n for n, p in learner.policy.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)
    from zerotir.telemetry import METRICS

    assert set(stats) <= set(METRICS)
    for k in ("loss/policy", "loss/total", "loss/entropy", "loss/clip_fraction", "optim/grad_norm", "optim/lr"):
        assert k in stats and torch.isfinite(torch.tensor(stats[k])), k
    assert stats["optim/grad_norm"] > 0 and stats["optim/lr"] == pytest.approx(1e-2)
    assert learner.updates == 1


def test_masked_tokens_get_exactly_zero_gradient(tiny_model_dir, tiny_batch):
    _, batch = tiny_batch
    cfg = tiny_cfg(tiny_model_dir, train__micro_batch_tokens=48, algo__entropy_coef=0.01, algo__kl_coef=0.1)
    learner = Learner(cfg)
    batch.ref_logprobs = learner.ref_logprobs(batch) - 0.1 * batch.loss_mask
    seen = []
    orig = learner.response_logits

    def spy(model, mb):
        out = orig(model, mb)
        if model is learner.policy and torch.is_grad_enabled():
            out.retain_grad()
            seen.append((out, mb.loss_mask))
        return out

    learner.response_logits = spy
    grads_a = _capture_grads(learner)
    learner.update(batch)
    assert len(seen) > 1  # several micro-batches
    for logits, mask in seen:
        g = logits.grad.abs().sum(-1)
        assert torch.all(g[mask == 0] == 0) and torch.all(g[mask == 1] > 0)
    # garbage in masked positions of advantages / behaviour / reference log-probs changes nothing
    noisy = batch.select(list(range(batch.size)))
    off = batch.loss_mask == 0
    noisy.advantages = torch.where(off, torch.full_like(batch.advantages, 7.0), batch.advantages)
    noisy.behaviour_logprobs = torch.where(off, torch.full_like(batch.behaviour_logprobs, -9.0),
                                           batch.behaviour_logprobs)
    noisy.ref_logprobs = torch.where(off, torch.full_like(batch.ref_logprobs, 3.0), batch.ref_logprobs)
    learner2 = Learner(cfg)
    grads_b = _capture_grads(learner2)
    learner2.update(noisy)
    assert grads_a.keys() == grads_b.keys()
    for n in grads_a:
        torch.testing.assert_close(grads_a[n], grads_b[n], atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"])
def test_micro_batching_does_not_change_the_gradient(tiny_model_dir, tiny_batch, agg):
    _, batch = tiny_batch
    grads = []
    for mbt in (100_000, 40):
        learner = Learner(tiny_cfg(tiny_model_dir, train__micro_batch_tokens=mbt, algo__loss_agg=agg))
        g = _capture_grads(learner)
        learner.update(batch)
        grads.append(g)
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-4)


def test_gae_critic_values_and_update(tiny_model_dir, tiny_batch):
    from zerotir.algos.advantages import compute_advantages

    _, batch = tiny_batch
    cfg = tiny_cfg(tiny_model_dir, algo__name="gae")
    learner = Learner(cfg)
    batch = batch.replace(advantages=None, values=learner.values(batch))
    assert batch.values.shape == batch.response_ids.shape
    assert torch.all(batch.values[batch.response_mask == 0] == 0)
    adv = compute_advantages(batch, cfg.algo)
    batch = batch.replace(advantages=adv.advantages, returns=adv.returns)
    before = {n: p.detach().clone() for n, p in learner.critic.named_parameters()}
    stats = learner.update(batch)
    assert stats["loss/value"] > 0
    assert any(not torch.equal(p, before[n]) for n, p in learner.critic.named_parameters())


class DoublingShare:
    """A data-parallel collaborator whose 'all-reduce' doubles the gradients (and whose share is the whole batch):
    the update must clip and report what the sync leaves, and return what `combine` makes of its stats."""

    def __init__(self):
        self.seen, self.shards = [], 0

    def shard(self, minibatch):
        self.shards += 1
        return minibatch

    def __call__(self, params):
        self.seen.append(float(torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))))
        for p in params:
            if p.grad is not None:
                p.grad.mul_(2.0)

    def combine(self, stats):
        return {**stats, "combined": 1.0}


def test_data_parallel_collaborator_shards_syncs_before_clipping_and_combines(tiny_model_dir, tiny_batch):
    _, batch = tiny_batch
    cfg = tiny_cfg(tiny_model_dir, optim__grad_clip=1e-3)
    dp = DoublingShare()
    learner = Learner(cfg, data_parallel=dp)
    stats = learner.update(batch)
    assert dp.shards == 1 and stats["combined"] == 1.0
    assert len(dp.seen) == 1 and stats["optim/grad_norm"] == pytest.approx(2 * dp.seen[0], rel=1e-5)
