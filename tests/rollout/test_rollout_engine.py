"""HFEngine on a real tiny HF model: log-probs match a fresh full forward pass, continuous batching and cache reuse
are exact, greedy equals HF generate, seeds are batch-independent, stops and budgets hold.

Tolerance: float32 CPU, |engine - full forward| <= 1e-4 per token (observed ~1e-6).
"""

from __future__ import annotations

import pytest
import torch

from zerotir.rollout.engine import Engine, GenerationRequest, SamplingParams
from zerotir.rollout.hf_engine import HFEngine
from zerotir.rollout.sampling import filter_logits

TOL = 1e-4


def full_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def check_against_full_forward(model, req: GenerationRequest, out) -> None:
    ids = req.context_ids + out.token_ids
    logits = full_logits(model, ids)[len(req.context_ids) - 1: len(ids) - 1]   # [n_new, V]
    toks = torch.tensor(out.token_ids)
    raw = logits.log_softmax(-1)[torch.arange(len(toks)), toks]
    assert torch.allclose(torch.tensor(out.raw_logprobs), raw, atol=TOL)
    p = req.params
    n = len(toks)
    if p.temperature > 0:
        filt = filter_logits(logits, torch.full((n,), p.temperature), torch.full((n,), p.top_k),
                             torch.full((n,), p.top_p)).log_softmax(-1)[torch.arange(n), toks]
    else:
        filt = raw
    assert torch.allclose(torch.tensor(out.logprobs), filt, atol=TOL)


def prompts(tok, k):
    return [tok.encode("Question: What is 12 * 34? Let me compute" + " it" * i) for i in range(k)]


@pytest.mark.parametrize("merge", [0, 10**6])
def test_logprobs_match_full_forward_with_continuous_batching(tiny_model, merge):
    """merge=0: joiners prefill in their own forward; 10**6: decode rows always padded into the joiners' forward."""
    model, tok = tiny_model
    eng = HFEngine(model, tok, max_batch=3, seed=0, merge_pad_tokens=merge)
    assert isinstance(eng, Engine)
    settings = [dict(temperature=1.0), dict(temperature=0.7, top_p=0.9), dict(temperature=1.3, top_k=20),
                dict(temperature=0.0), dict(temperature=1.0, top_p=0.5, top_k=50)]
    reqs = [GenerationRequest(f"r{i}", ctx, SamplingParams(max_new_tokens=8 + 5 * i, **settings[i % 5]))
            for i, ctx in enumerate(prompts(tok, 7))]
    outs = eng.generate(reqs)   # 7 requests through 3 rows: rows leave and others join mid-flight
    for r, o in zip(reqs, outs):
        assert o.finish_reason in ("length", "eos") and len(o.token_ids) == len(o.logprobs) == len(o.raw_logprobs)
        check_against_full_forward(model, r, o)
    joins = len(reqs) - 3
    assert eng.stats["forwards"] == eng.stats["steps"] + (joins if merge == 0 else 0)


def test_continuation_reuses_cache_exactly(tiny_model):
    model, tok = tiny_model
    eng = HFEngine(model, tok, max_batch=4, seed=1)
    ctx = prompts(tok, 1)[0]
    [free] = eng.generate([GenerationRequest("f", ctx, SamplingParams(temperature=0.0, max_new_tokens=20))])
    stop = tok.decode(free.token_ids)[6:8]
    first = GenerationRequest("a", ctx, SamplingParams(temperature=0.0, max_new_tokens=20, stop_strings=[stop]))
    [o1] = eng.generate([first])
    assert o1.finish_reason == "stop" and "a" in eng._parked  # paused: its cache is kept for the continuation
    inserted = tok.encode("\n```output\n408\n```\n", add_special_tokens=False)
    second = GenerationRequest("b", ctx + o1.token_ids + inserted, SamplingParams(max_new_tokens=12), prefix_of="a")
    [o2] = eng.generate([second])
    check_against_full_forward(model, second, o2)
    assert eng.stats["reused_tokens"] == len(ctx) + len(o1.token_ids) - 1
    # a wrong prefix hint is detected and ignored (no reuse), still exact
    third = GenerationRequest("c", tok.encode("something else entirely"), SamplingParams(max_new_tokens=5),
                              prefix_of="b")
    [o3] = eng.generate([third])
    check_against_full_forward(model, third, o3)


def test_greedy_equals_hf_generate(tiny_model):
    model, tok = tiny_model
    ctx = prompts(tok, 2)[1]
    eng = HFEngine(model, tok, max_batch=2)
    [o] = eng.generate([GenerationRequest("g", ctx, SamplingParams(temperature=0.0, max_new_tokens=20))])
    with torch.no_grad():
        ref = model.generate(torch.tensor([ctx]), attention_mask=torch.ones(1, len(ctx), dtype=torch.long),
                             do_sample=False, max_new_tokens=20, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)[0, len(ctx):].tolist()
    assert o.token_ids == ref[:len(o.token_ids)]
    assert o.finish_reason == ("eos" if o.token_ids[-1] == tok.eos_token_id else "length")


def test_seeded_sampling_is_independent_of_batching(tiny_model):
    model, tok = tiny_model
    ctxs = prompts(tok, 5)

    def run(max_batch):
        eng = HFEngine(model, tok, max_batch=max_batch)
        reqs = [GenerationRequest(f"r{i}", c, SamplingParams(max_new_tokens=15, seed=100 + i))
                for i, c in enumerate(ctxs)]
        return [o.token_ids for o in eng.generate(reqs)]

    a, b = run(1), run(5)
    assert a == b
    assert len({tuple(x) for x in a}) > 1


def test_stop_strings_budget_and_stop_tokens(tiny_model):
    model, tok = tiny_model
    ctx = prompts(tok, 1)[0]
    eng = HFEngine(model, tok, max_batch=4)
    [free] = eng.generate([GenerationRequest("f", ctx, SamplingParams(temperature=0.0, max_new_tokens=30))])
    assert free.finish_reason == "length" and len(free.token_ids) == 30
    text = tok.decode(free.token_ids)
    stop = text[10:13]
    [s] = eng.generate([GenerationRequest("s", ctx, SamplingParams(temperature=0.0, max_new_tokens=30,
                                                                   stop_strings=[stop]))])
    assert s.finish_reason == "stop" and s.stop_string == stop
    st = tok.decode(s.token_ids)
    assert stop in st and stop not in tok.decode(s.token_ids[:-1])   # stops right after the completing token
    assert s.token_ids == free.token_ids[:len(s.token_ids)]
    stop_id = free.token_ids[4]
    [e] = eng.generate([GenerationRequest("e", ctx, SamplingParams(temperature=0.0, max_new_tokens=30,
                                                                   stop_token_ids=[stop_id]))])
    assert e.finish_reason == "eos" and e.token_ids[-1] == stop_id and stop_id not in e.token_ids[:-1]


def test_update_weights_and_abort(tiny_model_dir):
    from zerotir.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(tiny_model_dir, "cpu")
    eng = HFEngine(model, tok, max_batch=2)
    ctx = prompts(tok, 1)[0]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=10)
    [a] = eng.generate([GenerationRequest("a", ctx, greedy)])
    sd = {k: v + 0.5 * torch.randn_like(v) for k, v in model.state_dict().items() if "mlp" in k}
    eng.update_weights(sd, version=3)
    assert eng.policy_version == 3
    [b] = eng.generate([GenerationRequest("b", ctx, greedy)])
    assert a.raw_logprobs != b.raw_logprobs
    with pytest.raises(KeyError, match="not in the engine"):
        eng.update_weights({"nope.weight": torch.zeros(1)}, 4)
    eng.add_request(GenerationRequest("x", ctx, greedy))
    eng.step()
    eng.abort("x")
    assert not eng.has_unfinished()


@pytest.mark.gpu
def test_logprobs_match_full_forward_on_cuda(tiny_model_dir):
    from zerotir.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(tiny_model_dir, "cuda")
    eng = HFEngine(model, tok, max_batch=3, device="cuda", seed=0)
    reqs = [GenerationRequest(f"r{i}", ctx, SamplingParams(max_new_tokens=10 + 3 * i, top_p=0.9))
            for i, ctx in enumerate(prompts(tok, 6))]
    for r, o in zip(reqs, eng.generate(reqs)):
        ids = r.context_ids + o.token_ids
        with torch.no_grad():
            lp = model(torch.tensor([ids], device="cuda")).logits[0].float().log_softmax(-1).cpu()
        n = len(r.context_ids)
        want = torch.stack([lp[n - 1 + i, t] for i, t in enumerate(o.token_ids)])
        assert torch.allclose(torch.tensor(o.raw_logprobs), want, atol=1e-3)  # TF32/kernel differences on GPU


ARCHS = {"llama": ("Llama", {}), "mistral": ("Mistral", {}), "qwen2": ("Qwen2", {}),
         # sliding windows of 4 tokens, far shorter than the sequences: every layer slides, or some do
         "mistral_window": ("Mistral", dict(sliding_window=4)),
         "qwen2_mixed_window": ("Qwen2", dict(use_sliding_window=True, sliding_window=4, max_window_layers=1)),
         "gemma3_window": ("Gemma3Text", dict(sliding_window=4, layer_types=["sliding_attention", "full_attention"],
                                              head_dim=16))}


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_architectures_with_grouped_kv_heads(tiny_tok, name):
    import transformers

    arch, extra = ARCHS[name]
    cfg = getattr(transformers, f"{arch}Config")(vocab_size=len(tiny_tok), hidden_size=64, intermediate_size=128,
                                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                 eos_token_id=tiny_tok.eos_token_id, **extra)
    torch.manual_seed(0)
    model_cls = "Gemma3ForCausalLM" if arch == "Gemma3Text" else f"{arch}ForCausalLM"
    model = getattr(transformers, model_cls)(cfg).eval()
    eng = HFEngine(model, tiny_tok, max_batch=2, seed=0)
    reqs = [GenerationRequest(f"r{i}", ctx, SamplingParams(max_new_tokens=6 + 3 * i))
            for i, ctx in enumerate(prompts(tiny_tok, 4))]
    for r, o in zip(reqs, eng.generate(reqs)):
        check_against_full_forward(model, r, o)


@pytest.mark.parametrize("max_batch,merge", [(12, 0), (12, 10**6), (5, 64)])
def test_group_samples_share_one_prefill_exactly(tiny_model, max_batch, merge):
    """3 prompts x 4 seeded samples: with prefill sharing, only the first of each prompt's samples joining in a step
    is forwarded; the outputs equal the unshared engine's and a fresh full forward's."""
    model, tok = tiny_model
    ctxs = prompts(tok, 3)

    def run(share):
        eng = HFEngine(model, tok, max_batch=max_batch, merge_pad_tokens=merge, share_prefill=share)
        reqs = [GenerationRequest(f"p{i}s{k}", c, SamplingParams(max_new_tokens=6 + 3 * k, seed=10 * i + k,
                                                                temperature=0.9))
                for i, c in enumerate(ctxs) for k in range(4)]
        return reqs, eng.generate(reqs), eng.stats

    reqs, shared, st = run(True)
    _, plain, st0 = run(False)
    assert st0["shared_prefill_tokens"] == 0 and st["shared_prefill_tokens"] > 0
    # every shared prefill token is one the unshared engine forwarded
    assert st["forward_tokens"] + st["shared_prefill_tokens"] == st0["forward_tokens"]
    if max_batch == 12:   # all 12 join in the first step: 3 leaders, 9 followers
        assert st["shared_prefill_tokens"] == sum(3 * len(c) for c in ctxs)
    for r, a, b in zip(reqs, shared, plain):
        assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
        assert torch.allclose(torch.tensor(a.raw_logprobs), torch.tensor(b.raw_logprobs), atol=1e-5)
        check_against_full_forward(model, r, a)
    assert len({tuple(o.token_ids) for o in shared[:4]}) > 1   # the samples of one prompt still differ
