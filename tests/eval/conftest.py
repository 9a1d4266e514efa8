"""Helpers for the eval tests: valid hand-made trajectories."""

import pytest

from zerotir.types import Segment, ToolCall, Trajectory


def make_traj(pid="p", sampled=5, tool_blocks=(), statuses=(), skipped=0, finish="eos", answer=None,
              correct=False, sample_index=0) -> Trajectory:
    """A valid trajectory: `sampled` model tokens, then for each tool block (n tokens) a call + its output."""
    ids, mask, segs, calls = [], [], [], []
    ids += [1] * sampled
    mask += [1] * sampled
    segs.append(Segment("model", 0, sampled))
    for n, st in zip(tool_blocks, statuses):
        start = len(ids)
        ids += [2] * n
        mask += [0] * n
        segs.append(Segment("tool", start, start + n))
        calls.append(ToolCall(code="print(1)", status=st, output="1", executed=True, output_tokens=n,
                              output_segment=len(segs) - 1))
        ids += [1]
        mask += [1]
        segs.append(Segment("model", start + n, start + n + 1))
    for _ in range(skipped):
        calls.append(ToolCall(code="print(2)", status="skipped", executed=False))
    t = Trajectory(problem_id=pid, prompt_ids=[0], response_ids=ids, loss_mask=mask,
                   logprobs=[-0.5 if m else 0.0 for m in mask], segments=segs, tool_calls=calls,
                   finish_reason=finish, answer=answer, correct=correct, sample_index=sample_index)
    t.validate()
    return t


@pytest.fixture(name="make_traj")
def make_traj_fixture():
    return make_traj
