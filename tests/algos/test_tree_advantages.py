"""The tree advantage estimator: a hand-computed tree, a naive loop over random trees, the shared-prefix credit, the
dispatcher, and the tree ids the rollout records (`rollout.tree.sibling_ids`)."""

from __future__ import annotations

import random

import pytest
import torch

from zerotir.algos.advantages import ADVANTAGE_ESTIMATORS, compute_advantages, tree
from zerotir.config import AlgoConfig
from zerotir.rollout.tree import LeafInfo, sibling_ids
from zerotir.types import TrainBatch

T = torch.tensor


def run(rewards, group_ids, branch_ids, mask):
    return tree(rewards=T(rewards, dtype=torch.float32), mask=T(mask, dtype=torch.float32), group_ids=T(group_ids),
                branch_ids=T(branch_ids))


def test_hand_computed_small_tree():
    """Prompt 0: root A branched into leaves a1, a2, a3 (rewards 1, 0, 0); root B never branched (reward 1).
    Root mean 2/4 = 0.5; A's sibling mean 1/3.
      a1: (1 - 1/3) + (1 - 0.5) = 7/6     a2 = a3: (0 - 1/3) + (0 - 0.5) = -5/6     b: 0 (alone) + (1 - 0.5) = 1/2
    Prompt 1: a single unbranched leaf: 0. The mask zeroes inserted tokens and padding."""
    mask = [[1, 1, 0, 1], [1, 1, 0, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]]
    adv, ret = run([1, 0, 0, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 1, 2], mask)
    want = torch.tensor([7 / 6, -5 / 6, -5 / 6, 1 / 2, 0.0])[:, None] * T(mask, dtype=torch.float32)
    assert torch.allclose(adv, want, atol=1e-6) and torch.equal(adv, ret)
    # the shared prefix (in the three rows of A's leaves) gets 3·(mean_sib - mean_root) = 3·(1/3 - 1/2) = -1/2
    assert adv[:3, 0].sum().item() == pytest.approx(-0.5, abs=1e-6)


def naive(rewards, groups, sibs):
    out = []
    for i, r in enumerate(rewards):
        sib = [rewards[j] for j in range(len(rewards)) if sibs[j] == sibs[i]]
        root = [rewards[j] for j in range(len(rewards)) if groups[j] == groups[i]]
        a = (r - sum(sib) / len(sib) if len(sib) > 1 else 0.0) + (r - sum(root) / len(root) if len(root) > 1 else 0.0)
        out.append(a)
    return out


def random_leaves(rng: random.Random) -> list[LeafInfo]:
    """Random trees: 1..3 prompts, 1..3 roots each, every root branching 0..2 levels deep into 2..3 children."""
    leaves = []

    def grow(g, root, path, bps, depth):
        if depth < 2 and rng.random() < 0.6:
            for c in range(rng.randint(2, 3)):
                grow(g, root, path + (c,), bps + (10 * (depth + 1),), depth + 1)
        else:
            leaves.append(LeafInfo(g, root, path, bps))
    for g in range(rng.randint(1, 3)):
        for root in range(rng.randint(1, 3)):
            grow(g, root, (), (), 0)
    return leaves


@pytest.mark.parametrize("seed", range(20))
def test_matches_a_naive_loop_on_random_trees(seed):
    rng = random.Random(seed)
    leaves = random_leaves(rng)
    sibs = sibling_ids(leaves)
    groups = [leaf.group_id for leaf in leaves]
    rewards = [float(rng.random() < 0.5) if rng.random() < 0.7 else rng.uniform(-1, 1) for _ in leaves]
    mask = [[1] * 3 for _ in leaves]
    adv, _ = run(rewards, groups, sibs, mask)
    assert torch.allclose(adv[:, 0], torch.tensor(naive(rewards, groups, sibs)), atol=1e-5)
    # every group of siblings: the local terms cancel, the prefix is judged against the root only
    for s in set(sibs):
        rows = [i for i, x in enumerate(sibs) if x == s]
        root = [rewards[j] for j in range(len(leaves)) if groups[j] == groups[rows[0]]]
        want = sum(rewards[i] for i in rows) - len(rows) * sum(root) / len(root) if len(root) > 1 else 0.0
        assert adv[rows, 0].sum().item() == pytest.approx(want, abs=1e-5)


def test_sibling_ids_from_tree_paths():
    leaves = [LeafInfo(0, 0, (0,), (5,)), LeafInfo(0, 0, (1, 0), (5, 9)), LeafInfo(0, 0, (1, 1), (5, 9)),
              LeafInfo(0, 1, (), ()), LeafInfo(1, 0, (0,), (4,)), LeafInfo(1, 0, (1,), (4,)), LeafInfo(1, 1, (), ())]
    # (0,) is a leaf under the root's first branch point, (1,0)/(1,1) under the second; unbranched roots stand alone
    assert sibling_ids(leaves) == [0, 1, 1, 2, 3, 3, 4]


def test_registered_and_dispatched():
    assert ADVANTAGE_ESTIMATORS["tree"] is tree
    mask = torch.ones(4, 2)
    batch = TrainBatch(prompt_ids=torch.zeros(4, 1, dtype=torch.long), prompt_mask=torch.ones(4, 1, dtype=torch.long),
                       response_ids=torch.zeros(4, 2, dtype=torch.long), response_mask=torch.ones(4, 2, dtype=torch.long),
                       loss_mask=mask, behaviour_logprobs=torch.zeros(4, 2), rewards=T([1.0, 0.0, 0.0, 1.0]),
                       group_ids=T([0, 0, 0, 0]), policy_version=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="algo.name=tree needs TrainBatch.branch_ids"):
        compute_advantages(batch, AlgoConfig(name="tree"))
    adv = compute_advantages(batch.replace(branch_ids=T([0, 0, 0, 1])), AlgoConfig(name="tree")).advantages
    assert torch.allclose(adv[:, 0], torch.tensor([7 / 6, -5 / 6, -5 / 6, 1 / 2]), atol=1e-6)
