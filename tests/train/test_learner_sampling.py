"""The learner's log-probs come from the distribution the rollout sampled from: temperature AND top-k / top-p
truncation (renormalised), decided by the sampler's own `filter_logits`. On-policy, PPO's ratio is then 1."""

import math

import pytest
import torch

from zerotir.rollout.sampling import filter_logits
from zerotir.train.learner import Learner
from zerotir.train.logprobs import MASKED_LOGIT, SamplingDistribution, token_logprobs
from zerotir.types import Segment, Trajectory, collate

from .conftest import tiny_cfg


def test_truncated_logprobs_hand_computed():
    # softmax([2, 1, 0, -1]) = .644, .237, .087, .032: top_k=2 and top_p=.8 both keep tokens {0, 1}
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0], [2.0, 1.0, 0.0, -1.0]]], requires_grad=True)
    toks = torch.tensor([[1, 3]])                        # token 3 lies outside the set: kept (it was sampled)
    for dist in (SamplingDistribution(top_k=2), SamplingDistribution(top_p=0.8)):
        x = dist.logits(logits, toks)
        lp = token_logprobs(x, toks)
        assert lp[0, 0].item() == pytest.approx(1 - math.log(math.e ** 2 + math.e), abs=1e-6)
        assert lp[0, 1].item() == pytest.approx(-1 - math.log(math.e ** 2 + math.e + math.e ** -1), abs=1e-6)
        assert x[0, 0, 2].item() == x[0, 0, 3].item() == MASKED_LOGIT
        from zerotir.algos.losses import entropy_from_logits

        ent = entropy_from_logits(x)
        p = [math.e ** 2 / (math.e ** 2 + math.e), math.e / (math.e ** 2 + math.e)]
        assert ent[0, 0].item() == pytest.approx(-sum(q * math.log(q) for q in p), abs=1e-6)
        logits.grad = None
        (lp.sum() + ent.sum()).backward()
        assert torch.isfinite(logits.grad).all() and logits.grad[0, 0, 2:].abs().sum() == 0


def test_keep_mask_is_the_samplers_set():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, 50, generator=g) * 3
    toks = torch.randint(0, 50, (5, 7), generator=g)
    dist = SamplingDistribution(temperature=0.7, top_k=20, top_p=0.8)
    want = filter_logits(logits.reshape(-1, 50), torch.full((35,), 0.7), torch.full((35,), 20),
                         torch.full((35,), 0.8)).reshape(5, 7, 50) > float("-inf")
    want.scatter_(-1, toks[..., None], True)
    assert torch.equal(dist.keep_mask(logits, toks), want)
    assert not SamplingDistribution(temperature=0.7).truncates
    torch.testing.assert_close(SamplingDistribution(temperature=0.7).logits(logits, toks), logits / 0.7)


def _rollout(model_dir, n: int, **sampling) -> list[Trajectory]:
    """n responses sampled by the HF engine (the rollout's engine) from the model at model_dir."""
    from zerotir.models import load_model_and_tokenizer
    from zerotir.rollout.engine import GenerationRequest, SamplingParams
    from zerotir.rollout.hf_engine import HFEngine

    model, tok = load_model_and_tokenizer(model_dir, "cpu")
    eng = HFEngine(model, tok, max_batch=n, seed=0)
    ctx = [tok.encode(f"Question: what is {i} * 7? Let me compute") for i in range(n)]
    outs = eng.generate([GenerationRequest(f"r{i}", c, SamplingParams(max_new_tokens=24, **sampling))
                         for i, c in enumerate(ctx)])
    return [Trajectory(problem_id=f"p{i}", prompt_ids=c, response_ids=o.token_ids, loss_mask=[1] * len(o.token_ids),
                       logprobs=o.logprobs, raw_logprobs=o.raw_logprobs,
                       segments=[Segment("model", 0, len(o.token_ids))], group_id=i, reward=1.0)
            for i, (c, o) in enumerate(zip(ctx, outs))]


@pytest.mark.parametrize("sampling", [dict(temperature=0.8, top_p=0.9), dict(temperature=1.0, top_k=20),
                                      dict(temperature=0.7, top_p=0.8, top_k=40)])
def test_on_policy_ratio_is_one_with_top_p_and_top_k(tiny_model_dir, sampling):
    trajs = _rollout(tiny_model_dir, 4, **sampling)
    cfg = tiny_cfg(tiny_model_dir, **{f"rollout__{k}": v for k, v in sampling.items()})
    learner = Learner(cfg)
    batch = collate(trajs, learner.pad_id)
    m = batch.loss_mask.bool()
    lp = learner.logprobs(batch)
    assert (lp - batch.behaviour_logprobs)[m].abs().max() < 1e-5
    g = torch.Generator().manual_seed(0)
    stats = learner.update(batch.replace(advantages=torch.randn(batch.loss_mask.shape, generator=g) * batch.loss_mask))
    assert stats["loss/is_ratio_mean"] == pytest.approx(1.0, abs=1e-6) and stats["loss/clip_fraction"] == 0.0
    assert stats["loss/is_ratio_max"] == pytest.approx(1.0, abs=1e-5)
    # the temperature alone (the learner before) is another distribution: the ratio is not 1
    learner.dist = SamplingDistribution(temperature=sampling["temperature"])
    assert (learner.logprobs(batch) - batch.behaviour_logprobs)[m].abs().max() > 1e-2
