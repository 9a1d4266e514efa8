"""HFEngine's tree support on the real tiny model: `fork` lets K continuations start from one parked cache without
recomputing the prefix (counted in fed tokens), with the same tokens and log-probs as fresh requests; a probe parks
its context (`park`), and `return_entropy` reports the sampling distribution's entropy (hand-checked)."""

from __future__ import annotations

import math

import torch

from zerotir.rollout.engine import GenerationRequest, SamplingParams
from zerotir.rollout.hf_engine import HFEngine, sampling_entropy

TOL = 1e-4


def _params(seed: int, n: int, **kw) -> SamplingParams:
    return SamplingParams(temperature=1.0, max_new_tokens=n, seed=seed, **kw)


def _parent(eng, tok):
    """A parked parent request: 6 sampled tokens of a 20-odd token context (park=True: kept on a 'length' finish)."""
    ctx = tok.encode("Question: What is 12 * 34? Let me compute it with python")
    out = eng.generate([GenerationRequest("parent", ctx, _params(1, 6, park=True))])[0]
    return ctx, out


def test_fork_copies_the_cache_rows_instead_of_recomputing_the_prefix(tiny_model):
    model, tok = tiny_model
    eng = HFEngine(model, tok, max_batch=8, seed=0, cpu_threads=1)
    ctx, parent = _parent(eng, tok)
    tool = tok.encode(" output 408 done")
    child_ctx = ctx + parent.token_ids + tool
    assert eng.fork("parent", ["c0", "c1", "c2"]) and not eng.fork("parent", ["x"])
    before = dict(eng.stats)
    reqs = [GenerationRequest(f"k{i}", child_ctx, _params(10 + i, 5), prefix_of=f"c{i}") for i in range(3)]
    outs = eng.generate(reqs)
    fed = eng.stats["forward_tokens"] - before["forward_tokens"]
    # the parent's last token and the tool block once, then one decode token per later sampled token of each child
    assert fed == 1 + len(tool) + sum(len(o.token_ids) - 1 for o in outs)
    assert eng.stats["reused_tokens"] - before["reused_tokens"] == len(ctx) + len(parent.token_ids) - 1
    assert eng.stats["shared_prefill_tokens"] - before["shared_prefill_tokens"] == 2 * len(child_ctx)
    # exactly what fresh requests (full prefill, no sharing) sample with the same seeds
    fresh = HFEngine(model, tok, max_batch=8, seed=0, cpu_threads=1, share_prefill=False)
    want = fresh.generate([GenerationRequest(f"f{i}", child_ctx, _params(10 + i, 5)) for i in range(3)])
    for o, w in zip(outs, want):
        assert o.token_ids == w.token_ids
        assert torch.allclose(torch.tensor(o.logprobs), torch.tensor(w.logprobs), atol=TOL)
    assert len({tuple(o.token_ids) for o in outs}) > 1  # distinct seeds: the siblings are independent samples


def test_without_fork_the_siblings_recompute_the_prefix(tiny_model):
    """The control: all three name the parent itself; only the first finds its cache, the others prefill it all."""
    model, tok = tiny_model
    eng = HFEngine(model, tok, max_batch=8, seed=0, cpu_threads=1, share_prefill=False)
    ctx, parent = _parent(eng, tok)
    tool = tok.encode(" output 408 done")
    child_ctx = ctx + parent.token_ids + tool
    before = eng.stats["forward_tokens"]
    outs = eng.generate([GenerationRequest(f"k{i}", child_ctx, _params(10 + i, 5), prefix_of="parent")
                         for i in range(3)])
    fed = eng.stats["forward_tokens"] - before
    assert fed == (1 + len(tool)) + 2 * len(child_ctx) + sum(len(o.token_ids) - 1 for o in outs)


def test_probe_parks_its_context_and_reports_entropy(tiny_model):
    model, tok = tiny_model
    eng = HFEngine(model, tok, max_batch=8, seed=0, cpu_threads=1)
    ctx = tok.encode("Question: What is 12 * 34?")
    probe = eng.generate([GenerationRequest("probe", ctx, _params(3, 1, park=True, return_entropy=True))])[0]
    assert len(probe.entropies) == 1 and 0 < probe.entropies[0] <= math.log(len(tok)) + 1e-4
    before = eng.stats["forward_tokens"]
    # a continuation of exactly the probe's context reuses all but its last token (fed again for the logits)
    cont = eng.generate([GenerationRequest("cont", ctx, _params(4, 3), prefix_of="probe")])[0]
    assert eng.stats["forward_tokens"] - before == 1 + len(cont.token_ids) - 1
    assert cont.entropies is None
    fresh = HFEngine(model, tok, max_batch=8, seed=0, cpu_threads=1).generate(
        [GenerationRequest("f", ctx, _params(4, 3))])[0]
    assert cont.token_ids == fresh.token_ids


def test_sampling_entropy_by_hand():
    logits = torch.tensor([[0.0, 0.0, -1e9], [math.log(3.0), 0.0, -1e9], [0.0, 0.0, 0.0], [5.0, 1.0, 1.0]])
    temp = torch.tensor([1.0, 1.0, 2.0, 0.0])
    top_k = torch.tensor([0, 0, 1, 0])
    top_p = torch.ones(4)
    h = sampling_entropy(logits, temp, top_k, top_p)
    p = torch.softmax(torch.tensor([5.0, 1.0, 1.0]), -1)
    want = [math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), 0.0, float(-(p * p.log()).sum())]
    assert torch.allclose(h, torch.tensor(want), atol=1e-6)


def test_tree_rollout_on_the_tool_model_feeds_every_tree_position_once(tool_model, sandbox):
    """The format-trained tiny model, the real sandbox, K=3 after the first tool output: each leaf's log-probs match
    a fresh forward over its own sequence (copied cache rows are exact), siblings share the prefix, and the engine
    fed each prompt / tree position once: no prefix is recomputed for a child."""
    import dataclasses

    from test_rollout_e2e import check_logprobs_full_forward

    from zerotir.config import RolloutConfig
    from zerotir.rollout.tir import rollout_tree
    from zerotir.types import Problem

    model, tok = tool_model
    eng = HFEngine(model, tok, max_batch=16, seed=0, cpu_threads=1)
    cfg = dataclasses.replace(RolloutConfig(), template="toy", max_total_tokens=160, max_new_tokens_per_turn=80,
                              branch_factor=3, branch_max_leaves=3)
    res = rollout_tree([Problem("p", "What is 13*27?", "351")], eng, sandbox, cfg, n_samples=2, max_tool_calls=2,
                       seed=3)
    trajs, leaves = res.trajectories, res.leaves
    assert any(leaf.path for leaf in leaves), [t.response_text for t in trajs]   # the model called the tool
    assert len(trajs) <= 2 * cfg.branch_max_leaves
    expected = len(trajs[0].prompt_ids)             # the two roots share one prompt prefill
    for root in {leaf.root for leaf in leaves}:
        mine = [(t, leaf) for t, leaf in zip(trajs, leaves) if leaf.root == root]
        bp = mine[0][1].branch_points[0] if mine[0][1].path else 0
        expected += bp
        for t, _leaf in mine:
            t.validate()
            check_logprobs_full_forward(model, t)
            assert len(t.response_ids) <= cfg.max_total_tokens
            shared = mine[0][0]
            assert t.response_ids[:bp] == shared.response_ids[:bp] and t.logprobs[:bp] == shared.logprobs[:bp]
            assert t.loss_mask[:bp] == shared.loss_mask[:bp]
            last_model_end = max(s.end for s in t.segments if s.kind == "model")
            expected += (last_model_end - 1) - bp       # a leaf's last sampled token is never fed
    assert eng.stats["forward_tokens"] == expected


def test_entropy_probe_on_the_tool_model(tool_model, sandbox):
    """branch_at='entropy' on the real engine: a threshold no entropy reaches samples exactly the unbranched rollout
    (the probe's token is discarded, its cache reused); threshold 0 branches at every tool output."""
    import dataclasses

    from zerotir.config import RolloutConfig
    from zerotir.rollout.tir import rollout_tree
    from zerotir.types import Problem

    model, tok = tool_model
    base = dataclasses.replace(RolloutConfig(), template="toy", max_total_tokens=160, max_new_tokens_per_turn=80)
    probs = [Problem("p", "What is 13*27?", "351")]

    def run(**over):
        eng = HFEngine(model, tok, max_batch=16, seed=0, cpu_threads=1)
        return rollout_tree(probs, eng, sandbox, dataclasses.replace(base, **over), n_samples=2, max_tool_calls=2,
                            seed=3)

    plain = run()
    never = run(branch_factor=2, branch_max_leaves=2, branch_at="entropy", branch_entropy_threshold=1e9)
    assert [t.response_ids for t in never.trajectories] == [t.response_ids for t in plain.trajectories]
    for a, b in zip(never.trajectories, plain.trajectories):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=TOL)
    always = run(branch_factor=2, branch_max_leaves=2, branch_at="entropy", branch_entropy_threshold=0.0)
    called = sum(any(c.executed for c in t.tool_calls) for t in plain.trajectories)
    assert called and len(always.trajectories) == len(plain.trajectories) + called
    for t in always.trajectories:
        t.validate()
