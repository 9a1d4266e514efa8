"""Shared-prompt forward: each distinct prompt runs once per micro-batch. Log-probs and gradients equal the plain
one-row-per-response forward (float32, tolerance ~1e-5); micro-batches keep a prompt's rows together."""

import pytest
import torch

from zerotir.train.learner import Learner
from zerotir.train.micro import plan_micro_batches
from zerotir.train.shared_prefix import group_rows_by_prompt, shared_prompt_logits

from .conftest import tiny_cfg


def test_group_rows_by_prompt_hand_computed():
    ids = torch.tensor([[0, 5, 6], [7, 8, 9], [0, 5, 6], [9, 5, 6], [7, 8, 9]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1], [0, 1, 1], [0, 1, 1], [1, 1, 1]])
    firsts, owner = group_rows_by_prompt(ids, mask)
    # row 3's masked pad (9) does not count: its real prompt [5, 6] equals rows 0 and 2
    assert firsts == [0, 1] and owner.tolist() == [0, 1, 0, 0, 1]


def test_plan_micro_batches_keeps_a_prompts_rows_together():
    plens = [4, 4, 4, 2, 2, 2]
    rlens = [3, 5, 1, 9, 2, 2]
    keys = ["a", "a", "a", "b", "b", "b"]
    # prompt b's longest row (2+9) comes first; cost = prompts x max plen + rows x max rlen
    assert plan_micro_batches(plens, rlens, 100, keys) == [[3, 4, 5, 1, 0, 2]]   # 2*4 + 6*9 = 62
    # budget 30: b's rows cost 1*2 + 3*9 = 29; adding a's first row would cost 2*4 + 4*9 = 44 → split
    assert plan_micro_batches(plens, rlens, 30, keys) == [[3, 4, 5], [1, 0, 2]]
    # budget 20: one prompt's rows are split when they do not fit (b: 1*2 + 2*9 = 20 fits, 3 rows = 29 do not);
    # then [5, 1] = 2*4 + 2*5 = 18, adding row 0 = 2*4 + 3*5 = 23 > 20
    assert plan_micro_batches(plens, rlens, 20, keys) == [[3, 4], [5, 1], [0, 2]]


def test_shared_logits_equal_plain_forward(tiny_model_dir, grouped_batch):
    trajs, batch = grouped_batch
    learner = Learner(tiny_cfg(tiny_model_dir))
    model = learner.policy
    with torch.no_grad():
        got = shared_prompt_logits(model, batch.prompt_ids, batch.prompt_mask, batch.response_ids, torch.float32,
                                   keep_ok=True)
        no_keep = shared_prompt_logits(model, batch.prompt_ids, batch.prompt_mask, batch.response_ids,
                                       torch.float32, keep_ok=False)
    torch.testing.assert_close(got, no_keep)
    for i, t in enumerate(trajs):
        with torch.no_grad():
            want = model(input_ids=torch.tensor([t.prompt_ids + t.response_ids])).logits[0, len(t.prompt_ids) - 1:-1]
        torch.testing.assert_close(got[i, :len(t.response_ids)], want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_sum"])
@pytest.mark.parametrize("mbt", [100_000, 30])
def test_shared_gradient_equals_plain_gradient(tiny_model_dir, grouped_batch, agg, mbt):
    """mbt=30 splits prompts' rows over micro-batches (a prompt then runs once per micro-batch it appears in)."""
    from .test_learner_update import _capture_grads

    _, batch = grouped_batch
    grads, lps = [], []
    for share in (True, False):
        learner = Learner(tiny_cfg(tiny_model_dir, train__micro_batch_tokens=mbt, algo__loss_agg=agg,
                                   train__share_prompt_forward=share, rollout__temperature=0.8))
        lps.append(learner.logprobs(batch))
        g = _capture_grads(learner)
        stats = learner.update(batch)
        assert stats["optim/grad_norm"] > 0
        grads.append(g)
    torch.testing.assert_close(lps[0], lps[1], atol=1e-5, rtol=1e-4)
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-4)


def test_shared_path_is_taken_and_masked_tokens_get_zero_gradient(tiny_model_dir, grouped_batch, monkeypatch):
    import zerotir.train.learner as learner_mod

    _, batch = grouped_batch
    learner = Learner(tiny_cfg(tiny_model_dir, algo__entropy_coef=0.01))  # every sampled token gets a gradient
    shared_calls = []
    real = learner_mod.shared_prompt_logits
    monkeypatch.setattr(learner_mod, "shared_prompt_logits", lambda *a, **k: shared_calls.append(1) or real(*a, **k))
    seen = []
    orig = learner.response_logits

    def spy(model, mb):
        out = orig(model, mb)
        out.retain_grad()
        seen.append((out, mb.loss_mask))
        return out

    learner.response_logits = spy
    learner.update(batch)
    assert len(shared_calls) == len(seen) == 1
    logits, mask = seen[0]
    g = logits.grad.abs().sum(-1)
    assert torch.all(g[mask == 0] == 0) and torch.all(g[mask == 1] > 0)


def test_shared_forward_with_lora_and_reference(tiny_model_dir, grouped_batch):
    _, batch = grouped_batch
    out = []
    for share in (True, False):
        cfg = tiny_cfg(tiny_model_dir, model__lora_rank=4, model__lora_target_modules=["q_proj", "v_proj"],
                       algo__kl_coef=0.1, train__share_prompt_forward=share)
        torch.manual_seed(0)  # the adapters' initialisation draws from the global RNG
        learner = Learner(cfg)
        with torch.no_grad():
            for n, p in learner.policy.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.5)
        out.append((learner.logprobs(batch), learner.ref_logprobs(batch)))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out[0][0], out[0][1])


def test_shared_forward_under_bf16_autocast(tiny_model_dir, grouped_batch):
    _, batch = grouped_batch
    lps = []
    for share in (True, False):
        learner = Learner(tiny_cfg(tiny_model_dir, model__autocast_bf16=True, train__share_prompt_forward=share))
        lps.append(learner.logprobs(batch))
    mask = batch.loss_mask.bool()
    assert torch.isfinite(lps[0]).all()
    # bf16 rounding differs between the two paths; the log-probs agree to bf16 precision
    assert (lps[0][mask] - lps[1][mask]).abs().max() < 0.05


SLIDING = {"mistral": ("Mistral", dict(sliding_window=4)),
           "qwen2_mixed": ("Qwen2", dict(use_sliding_window=True, sliding_window=4, max_window_layers=1)),
           "gemma3": ("Gemma3Text", dict(sliding_window=4, layer_types=["sliding_attention", "full_attention"],
                                         head_dim=16))}


@pytest.mark.parametrize("name", sorted(SLIDING))
def test_sliding_window_models_shared_equals_plain(tiny_model_dir, grouped_batch, name):
    """Window 4, rows up to ~26 tokens: the shared path's windowed masks (one for every layer, or one per layer type)
    give the log-probs and gradients of HF's own masking."""
    import transformers

    from zerotir.models import load_tokenizer
    from zerotir.models.masks import sliding_window

    from .test_learner_update import _capture_grads

    arch, kw = SLIDING[name]
    tok = load_tokenizer(tiny_model_dir)
    cfg_cls = getattr(transformers, f"{arch}Config")
    model_cls = getattr(transformers, "Gemma3ForCausalLM" if arch == "Gemma3Text" else f"{arch}ForCausalLM")
    config = cfg_cls(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id, **kw)
    assert sliding_window(config) == 4
    _, batch = grouped_batch
    assert batch.prompt_ids.shape[1] + batch.response_ids.shape[1] > 4 * 3
    lps, grads = [], []
    for share in (True, False):
        torch.manual_seed(0)
        model = model_cls(config).eval()
        learner = Learner(tiny_cfg(tiny_model_dir, train__share_prompt_forward=share), model=model, tokenizer=tok)
        lps.append(learner.logprobs(batch))
        g = _capture_grads(learner)
        learner.update(batch)
        grads.append(g)
    torch.testing.assert_close(lps[0], lps[1], atol=1e-5, rtol=1e-4)
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-4)


def test_sliding_window_of_configs():
    from transformers import MistralConfig, Qwen2Config

    from zerotir.models.masks import sliding_window

    assert sliding_window(Qwen2Config()) is None                        # layer_types all full attention
    assert sliding_window(MistralConfig(sliding_window=64)) == 64       # no layer_types: every layer slides
    assert sliding_window(MistralConfig(sliding_window=None)) is None

    class Chunked:
        layer_types = ["chunked_attention", "full_attention"]
        sliding_window = 8

    with pytest.raises(ValueError, match="chunked_attention"):
        sliding_window(Chunked())
