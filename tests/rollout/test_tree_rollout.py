"""Tree rollouts with a scripted engine (exact token streams per tree node) and the real sandbox: siblings share the
prefix exactly (tokens, log-probs, mask, segments, calls), each branch sees its own interpreter state after the fork,
budgets hold per leaf, tree ids and sample indices are right, and branch_at='entropy' branches only where the probe is
uncertain."""

from __future__ import annotations

import dataclasses
import re

import pytest
from scripted import ScriptedEngine

from zerotir.config import RolloutConfig
from zerotir.rollout import tree
from zerotir.rollout.engine import GenerationOutput
from zerotir.rollout.format import CODE_CLOSE, CODE_OPEN
from zerotir.rollout.tir import rollout, rollout_tree
from zerotir.types import Problem, collate

RID = re.compile(r"g(\d+)-s(\d+)-p([\d.]*)-t\d+(-probe)?-")


class TreeEngine(ScriptedEngine):
    """ScriptedEngine with one stream per tree node (group, root, path): a child continues its own stream from its
    start. One-token probes report the entropy given in `entropy[(group, root, path)]` and consume nothing."""

    def __init__(self, tokenizer, streams, entropy=None):
        super().__init__(tokenizer, streams)
        self.entropy = entropy or {}
        self.probes: list = []
        self.requests: list = []

    def add_request(self, request):
        m = RID.match(request.request_id)
        key = (int(m[1]), int(m[2]), tuple(int(c) for c in m[3].split(".")) if m[3] else ())
        self.requests.append(request)
        if m[4]:
            self.probes.append((request, key))
            return
        super().add_request(request)
        self.active[-1]["key"] = key

    def has_unfinished(self):
        return bool(self.active or self.probes)

    def step(self):
        outs = super().step()
        for req, key in self.probes:
            outs.append(GenerationOutput(req.request_id, [self.eos_token_id], [-0.5], [-0.5], "length", None,
                                         [self.entropy.get(key, 0.0)]))
        self.probes = []
        return outs


def turn(tok, text: str, code: str | None = None) -> list[int]:
    """A model turn tokenized on its own (ending on a token boundary): text, then a python block if `code`."""
    return tok.encode(text + (f"{CODE_OPEN}{code}{CODE_CLOSE}" if code is not None else ""), add_special_tokens=False)


def cfg_for(**over) -> RolloutConfig:
    base = dict(template="toy", temperature=1.0, max_new_tokens_per_turn=64, max_total_tokens=400,
                max_tool_output_tokens=32, branch_factor=3, branch_max_points=1, branch_max_leaves=3)
    base.update(over)
    return RolloutConfig(**base)


def streams_for(tok, group=0, root=0):
    return {
        (group, root, ()): turn(tok, "Set x.", "x = 5\nprint(x)"),
        (group, root, (0,)): turn(tok, "A.", "x = 1\nprint(x)") + turn(tok, "B.", "print(x)") + turn(tok, "C."),
        (group, root, (1,)): turn(tok, "D.", "print(x)\nx = 2\nprint(x)") + turn(tok, "E."),
        (group, root, (2,)): turn(tok, "F."),
    }


def shared_prefix_identical(a, b, n: int) -> None:
    assert a.response_ids[:n] == b.response_ids[:n]
    assert a.loss_mask[:n] == b.loss_mask[:n]
    assert a.logprobs[:n] == b.logprobs[:n]
    assert a.raw_logprobs[:n] == b.raw_logprobs[:n]
    seg_a = [(s.kind, s.start, min(s.end, n)) for s in a.segments if s.start < n]
    seg_b = [(s.kind, s.start, min(s.end, n)) for s in b.segments if s.start < n]
    assert seg_a == seg_b and seg_a[-1][2] == n


def test_siblings_share_the_prefix_and_each_branch_has_its_own_variables(tiny_tok, sandbox):
    tok = tiny_tok
    cfg = cfg_for()
    eng = TreeEngine(tok, streams_for(tok))
    res = rollout_tree([Problem("p", "What is x?", "1")], eng, sandbox, cfg, n_samples=1, max_tool_calls=3, seed=0)
    trajs, leaves = res.trajectories, res.leaves
    assert [leaf.path for leaf in leaves] == [(0,), (1,), (2,)]
    assert [t.sample_index for t in trajs] == [0, 1, 2] and {t.group_id for t in trajs} == {0}
    assert tree.sibling_ids(leaves) == [0, 0, 0]
    bp = leaves[0].branch_points[0]
    assert all(leaf.branch_points == (bp,) for leaf in leaves)
    root_stream = streams_for(tok)[(0, 0, ())]
    assert trajs[0].response_ids[:len(root_stream)] == root_stream
    assert trajs[0].segments[1].kind == "tool" and trajs[0].segments[1].end == bp  # the branch follows the output
    for t in trajs:
        t.validate()
        shared_prefix_identical(trajs[0], t, bp)
        assert t.tool_calls[0] == trajs[0].tool_calls[0] and t.tool_calls[0].output == "5"
        assert len(t.response_ids) <= cfg.max_total_tokens
    # each branch sees x from before the fork and only its own assignments after it
    assert [c.output for c in trajs[0].tool_calls] == ["5", "1", "1"]
    assert [c.output for c in trajs[1].tool_calls] == ["5", "5\n2"]
    assert [c.output for c in trajs[2].tool_calls] == ["5"]
    # after the branch point each leaf holds its own stream (sampled tokens never re-encoded)
    assert "F." in trajs[2].response_text and "F." not in trajs[1].response_text
    # the three children were submitted together, each continuing the context through the tool block
    firsts = [r for r in eng.requests if "-p0-" in r.request_id or "-p1-" in r.request_id or "-p2-" in r.request_id]
    assert len({tuple(r.context_ids) for r in firsts[:3]}) == 1 and len(firsts[0].context_ids) > bp
    # distinct seeds per child (independent samples), derived from (seed, group, root, turn, path)
    assert len({r.params.seed for r in firsts[:3]}) == 3


def test_budgets_hold_per_leaf(tiny_tok, sandbox):
    """The tool budget counts the calls before the fork; the token budget bounds every leaf."""
    tok = tiny_tok
    streams = streams_for(tok)
    eng = TreeEngine(tok, streams)
    trajs = rollout([Problem("p", "q", "1")], eng, sandbox, cfg_for(), n_samples=1, max_tool_calls=2, seed=0)
    assert [c.status for c in trajs[0].tool_calls] == ["ok", "ok", "skipped"]  # 3rd block: 2 calls already ran
    assert [c.executed for c in trajs[1].tool_calls] == [True, True]
    # a tight token budget: every leaf is cut at exactly max_total_tokens
    small = cfg_for(max_total_tokens=len(streams[(0, 0, ())]) + 24)
    trajs = rollout([Problem("p", "q", "1")], TreeEngine(tok, streams), sandbox, small, n_samples=1, max_tool_calls=2)
    assert len(trajs) == 3
    for t in trajs:
        t.validate()
        assert len(t.response_ids) <= small.max_total_tokens
    assert any(t.finish_reason == "length" and len(t.response_ids) == small.max_total_tokens for t in trajs)


def test_leaf_budget_and_depth(tiny_tok, sandbox):
    """branch_max_leaves caps the children (min(K, L)); branch_max_points=0 turns branching off; K=1 is a plain
    rollout, identical to branching off."""
    tok = tiny_tok
    two = rollout_tree([Problem("p", "q", "1")], TreeEngine(tok, streams_for(tok)), sandbox,
                       cfg_for(branch_max_leaves=2), n_samples=1, max_tool_calls=3, seed=0)
    assert [leaf.path for leaf in two.leaves] == [(0,), (1,)]
    flat = [rollout([Problem("p", "q", "1")], TreeEngine(tok, streams_for(tok)), sandbox, cfg_for(**over),
                    n_samples=1, max_tool_calls=3, seed=0) for over in
            (dict(branch_max_points=0), dict(branch_factor=1))]
    assert len(flat[0]) == len(flat[1]) == 1
    root = streams_for(tok)[(0, 0, ())]
    assert flat[0][0].response_ids == flat[1][0].response_ids
    assert flat[0][0].response_ids[:len(root)] == root and flat[0][0].response_ids[-1] == tok.eos_token_id
    assert [s.kind for s in flat[0][0].segments] == ["model", "tool", "model"]


def test_entropy_branches_only_where_the_probe_is_uncertain(tiny_tok, sandbox):
    tok = tiny_tok
    streams = {**streams_for(tok, root=0), **streams_for(tok, root=1)}
    streams[(0, 1, ())] = streams[(0, 1, ())] + turn(tok, "Plain.")  # root 1 goes on unbranched
    eng = TreeEngine(tok, streams, entropy={(0, 0, ()): 2.0, (0, 1, ()): 0.3})
    res = rollout_tree([Problem("p", "q", "1")], eng, sandbox,
                       cfg_for(branch_at="entropy", branch_entropy_threshold=1.0), n_samples=2, max_tool_calls=3,
                       seed=0)
    assert [(leaf.root, leaf.path) for leaf in res.leaves] == [(0, (0,)), (0, (1,)), (0, (2,)), (1, ())]
    assert [t.sample_index for t in res.trajectories] == [0, 1, 2, 3]
    assert "Plain." in res.trajectories[3].response_text
    assert tree.sibling_ids(res.leaves) == [0, 0, 0, 1]
    assert [t.tree_path for t in res.trajectories] == [[0, 0], [0, 1], [0, 2], [1]]  # recorded for training
    assert collate(res.trajectories, pad_id=0).branch_ids.tolist() == [0, 0, 0, 1]
    for t in res.trajectories:
        t.validate()


def test_tree_helpers_and_bad_settings():
    assert tree.split_budget(5, 2) == [3, 2] and tree.split_budget(4, 4) == [1, 1, 1, 1]
    assert sum(tree.split_budget(7, 3)) == 7
    cfg = cfg_for(branch_factor=3, branch_max_points=2, branch_max_leaves=4)
    assert tree.children(cfg, depth=0, budget=4, room=10) == 3
    assert tree.children(cfg, depth=2, budget=4, room=10) == 1       # max branch points reached
    assert tree.children(cfg, depth=0, budget=1, room=10) == 1       # leaf budget spent
    assert tree.children(cfg, depth=0, budget=4, room=0) == 1        # nothing left to sample
    # a root's leaves never exceed branch_max_leaves, whatever the tree shape
    def most_leaves(budget, depth):
        k = tree.children(cfg, depth, budget, 10)
        return 1 if k < 2 else sum(most_leaves(b, depth + 1) for b in tree.split_budget(budget, k))
    assert most_leaves(4, 0) == 4 and most_leaves(tree.root_budget(cfg), 0) <= cfg.branch_max_leaves
    for over, key in [(dict(branch_factor=0), "branch_factor"), (dict(branch_at="sometimes"), "branch_at"),
                      (dict(branch_max_leaves=0), "branch_max_leaves"), (dict(branch_max_points=-1), "branch_max_points")]:
        with pytest.raises(ValueError, match=f"rollout.{key}"):
            tree.check_branching(dataclasses.replace(cfg, **over))


def test_entropy_needs_an_engine_that_reports_it():
    out = GenerationOutput("r", [1], [0.0], [0.0], "length")
    with pytest.raises(ValueError, match="branch_at='entropy'"):
        tree.entropy_gate(out, 1.0)
