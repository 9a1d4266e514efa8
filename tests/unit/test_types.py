import json

import pytest
import torch

from zerotir.types import (ExecResult, Problem, RecordError, Segment, ToolCall, Trajectory, collate,
                           read_trajectories, sibling_group_ids, write_jsonl)


def make_traj(**kw):
    # response: 3 sampled tokens, 2 inserted (tool output), 2 sampled
    t = Trajectory(
        problem_id="p1", prompt_ids=[5, 6, 7], response_ids=[10, 11, 12, 20, 21, 13, 14],
        loss_mask=[1, 1, 1, 0, 0, 1, 1], logprobs=[-0.1, -0.2, -0.3, 0.0, 0.0, -0.4, -0.5],
        raw_logprobs=[-0.1, -0.2, -0.3, 0.0, 0.0, -0.4, -0.5],
        segments=[Segment("model", 0, 3), Segment("tool", 3, 5), Segment("model", 5, 7)],
        tool_calls=[ToolCall(code="print(1)", status="ok", output="1\n", output_tokens=2, output_segment=1),
                    ToolCall(code="print(2)", status="skipped", executed=False)],
        finish_reason="eos", response_text="x", reward=1.0, reward_components={"correct": 1.0}, answer="1",
        correct=True, group_id=3, sample_index=1, policy_version=2)
    for k, v in kw.items():
        setattr(t, k, v)
    return t


def test_trajectory_jsonl_roundtrip(tmp_path):
    trajs = [make_traj(), make_traj(problem_id="p2", reward=0.0, correct=False, answer=None)]
    path = tmp_path / "t.jsonl"
    assert write_jsonl(path, trajs) == 2
    back = read_trajectories(path)
    assert back == trajs
    for t in back:
        t.validate()
    assert back[0].num_tool_calls == 1 and back[0].num_tool_tokens == 2 and back[0].num_sampled_tokens == 5


def test_invariants_catch_bad_records():
    with pytest.raises(AssertionError, match="loss_mask length"):
        make_traj(loss_mask=[1, 1]).validate()
    with pytest.raises(AssertionError, match="inserted token 3 carries a log-prob"):
        make_traj(logprobs=[-0.1, -0.2, -0.3, -9.0, 0.0, -0.4, -0.5]).validate()
    with pytest.raises(AssertionError, match="segment 1 .tool. has wrong mask"):
        make_traj(loss_mask=[1, 1, 1, 1, 0, 1, 1], logprobs=[-1.0] * 4 + [0.0, -1.0, -1.0]).validate()
    with pytest.raises(AssertionError, match="segments end at"):
        make_traj(segments=[Segment("model", 0, 3), Segment("tool", 3, 5)]).validate()


def test_bad_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(make_traj().to_dict()) + "\n{not json\n")
    with pytest.raises(RecordError, match=r"bad.jsonl:2: not valid JSON"):
        read_trajectories(p)
    p.write_text(json.dumps({**make_traj().to_dict(), "bogus": 1}) + "\n")
    with pytest.raises(RecordError, match=r"bad.jsonl:1: not a Trajectory .*bogus"):
        read_trajectories(p)


def test_problem_and_execresult_roundtrip():
    p = Problem("a", "What is 1+1?", "2", "src", {"level": 3})
    assert Problem.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    r = ExecResult("timeout", stdout="x", truncated=True, duration_s=2.0)
    assert ExecResult.from_dict(r.to_dict()) == r


def test_collate_pads_and_copies_mask():
    a = make_traj()
    b = make_traj(prompt_ids=[9], response_ids=[1, 2], loss_mask=[1, 1], logprobs=[-1.0, -2.0],
                  raw_logprobs=[-1.0, -2.0], segments=[Segment("model", 0, 2)], tool_calls=[], reward=0.0)
    batch = collate([a, b], pad_id=0)
    assert batch.prompt_ids.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert batch.prompt_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch.response_ids.shape == (2, 7)
    assert batch.loss_mask[0].tolist() == [1, 1, 1, 0, 0, 1, 1]
    assert batch.loss_mask[1].tolist() == [1, 1, 0, 0, 0, 0, 0]
    assert batch.response_mask[1].tolist() == [1, 1, 0, 0, 0, 0, 0]
    assert torch.allclose(batch.old_logprobs[1, :2], torch.tensor([-1.0, -2.0]))
    assert batch.rewards.tolist() == [1.0, 0.0]
    sub = batch.select([1])
    assert sub.size == 1 and sub.prompt_ids.tolist() == [[0, 0, 9]]


def test_sibling_group_ids_by_hand():
    # group 0: root 0 forked into two leaves (siblings), root 1 never branched; group 1: root 0 forked at depth 2
    # into [0,1,0] and [0,1,1], with [0,0] their aunt; a legacy row with no tree path is its own group
    rows = [(0, [0, 0]), (0, [0, 1]), (0, [1]), (1, [0, 0]), (1, [0, 1, 0]), (1, [0, 1, 1]), (1, []), (2, [0, 0])]
    assert sibling_group_ids(rows) == [0, 0, 1, 2, 3, 3, 4, 5]
    assert sibling_group_ids([(0, []), (0, []), (0, [0]), (0, [0])]) == [0, 1, 2, 3]  # no path: one id per row


def test_collate_fills_branch_ids_and_select_keeps_them(tmp_path):
    paths = [(0, [0, 0]), (0, [0, 1]), (0, [1]), (1, [0, 0]), (1, [0, 1])]
    trajs = [make_traj(group_id=g, tree_path=p) for g, p in paths]
    path = tmp_path / "t.jsonl"
    write_jsonl(path, trajs)
    back = read_trajectories(path)                      # tree paths survive the transcript round trip
    assert [t.tree_path for t in back] == [p for _, p in paths]
    batch = collate(back, pad_id=0)
    assert batch.branch_ids.dtype == torch.long and batch.branch_ids.tolist() == [0, 0, 1, 2, 2]
    assert batch.select([4, 0]).branch_ids.tolist() == [2, 0]
    assert collate([make_traj(), make_traj()], pad_id=0).branch_ids.tolist() == [0, 1]   # no tree ids
    bad = make_traj(tree_path=[0, -1])
    with pytest.raises(AssertionError, match="tree_path"):
        bad.validate()
