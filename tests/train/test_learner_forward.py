"""Learner pieces that need no loss function: micro-batch planning, trimming, positions, log-probs vs a plain forward."""

import torch

from zerotir.train.build import lr_lambda
from zerotir.train.learner import Learner
from zerotir.train.logprobs import token_logprobs
from zerotir.train.micro import plan_micro_batches, position_ids_from_mask, trim_batch
from zerotir.types import TrainBatch

from .conftest import tiny_cfg


def test_position_ids_from_mask_hand_computed():
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2, 0], [0, 1, 2, 3, 4, 5]]


def test_plan_micro_batches_sorted_and_within_budget():
    plens = [3, 10, 2, 4, 8]
    rlens = [5, 20, 1, 4, 2]
    groups = plan_micro_batches(plens, rlens, max_tokens=24)
    # longest first: row 1 (30 tokens) alone (it exceeds the budget), then 4 (10) + 0 (8): 2 x (8+5)=26 > 24 → split
    assert groups == [[1], [4], [0, 3], [2]]
    assert sorted(i for g in groups for i in g) == list(range(5))
    for g in groups[1:]:
        width = max(plens[i] for i in g) + max(rlens[i] for i in g)
        assert len(g) * width <= 24
    assert plan_micro_batches(plens, rlens, max_tokens=10_000) == [[1, 4, 0, 3, 2]]


def test_trim_batch_drops_all_pad_columns():
    b = TrainBatch(prompt_ids=torch.tensor([[0, 0, 5, 6], [0, 0, 0, 7]]), prompt_mask=torch.tensor([[0, 0, 1, 1],
                                                                                                    [0, 0, 0, 1]]),
                   response_ids=torch.tensor([[8, 9, 0, 0], [8, 0, 0, 0]]),
                   response_mask=torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]]),
                   loss_mask=torch.tensor([[1., 0., 0., 0.], [1., 0., 0., 0.]]), behaviour_logprobs=torch.zeros(2, 4),
                   rewards=torch.zeros(2), group_ids=torch.zeros(2, dtype=torch.long),
                   policy_version=torch.zeros(2, dtype=torch.long))
    t = trim_batch(b)
    assert t.prompt_ids.tolist() == [[5, 6], [0, 7]]
    assert t.response_ids.tolist() == [[8, 9], [8, 0]]
    assert t.behaviour_logprobs.shape == (2, 2) and t.rewards.shape == (2,)


def test_token_logprobs_matches_log_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 7, generator=g)
    toks = torch.randint(0, 7, (2, 3), generator=g)
    for temp in (1.0, 0.7):
        want = torch.log_softmax(logits / temp, -1).gather(-1, toks[..., None])[..., 0]
        torch.testing.assert_close(token_logprobs(logits, toks, temp), want)


def test_lr_schedule_hand_computed():
    f = lr_lambda("linear", warmup=2, total=6)
    assert [round(f(s), 4) for s in range(7)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    c = lr_lambda("cosine", warmup=0, total=4)
    assert [round(c(s), 4) for s in range(5)] == [1.0, 0.8536, 0.5, 0.1464, 0.0]


def test_logprobs_equal_plain_forward_per_sequence(tiny_model_dir, tiny_batch):
    """Padded, micro-batched, logits_to_keep log-probs == a plain unpadded forward of each sequence alone."""
    trajs, batch = tiny_batch
    cfg = tiny_cfg(tiny_model_dir, train__micro_batch_tokens=40, rollout__temperature=0.8)
    learner = Learner(cfg)
    got = learner.logprobs(batch)
    model = learner.policy
    for i, t in enumerate(trajs):
        ids = torch.tensor([t.prompt_ids + t.response_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(t.prompt_ids) - 1:-1]
        want = torch.log_softmax(logits / 0.8, -1).gather(-1, torch.tensor(t.response_ids)[:, None])[:, 0]
        torch.testing.assert_close(got[i, :len(t.response_ids)], want, atol=2e-5, rtol=1e-4)
        assert torch.all(got[i, len(t.response_ids):] == 0)


def test_lora_merged_weights_reproduce_the_adapted_policy(tiny_model_dir, tiny_batch):
    """LoRA: only adapters train; the merged state dict (engine sync / saved policy) gives the adapted log-probs,
    and the reference (adapter disabled) gives the base model's."""
    from zerotir.models import load_model_and_tokenizer

    _, batch = tiny_batch
    cfg = tiny_cfg(tiny_model_dir, model__lora_rank=4, model__lora_target_modules=["q_proj", "v_proj"],
                   algo__kl_coef=0.1)
    learner = Learner(cfg)
    trainable = [n for n, p in learner.policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    base_lp = learner.logprobs(batch)
    with torch.no_grad():
        for n, p in learner.policy.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    adapted = learner.logprobs(batch)
    assert not torch.allclose(adapted, base_lp)
    torch.testing.assert_close(learner.ref_logprobs(batch), base_lp)
    plain, _ = load_model_and_tokenizer(tiny_model_dir, "cpu")
    missing, unexpected = plain.load_state_dict(learner.policy_state_dict(), strict=False)
    assert not unexpected and all("lm_head" in k for k in missing)
    other = Learner(tiny_cfg(tiny_model_dir), model=plain, tokenizer=learner.tokenizer)
    torch.testing.assert_close(other.logprobs(batch), adapted, atol=1e-5, rtol=1e-4)
