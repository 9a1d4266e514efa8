"""Tool-outcome filters (roc, void_turns): typed predicates, hand-computed keeps, group statistics of the kept set,
composition with dynamic sampling, oversampling, config errors."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from zerotir.algos.advantages import compute_advantages
from zerotir.algos.filters import (TOOL_FILTERS, check_filter_config, filter_trajectories, format_issues,
                                   has_void_turn, roc_filter, roc_split, samples_per_prompt, tool_errors)
from zerotir.config import AlgoConfig, Config
from zerotir.records import FilterResult
from zerotir.types import Segment, ToolCall, Trajectory, collate


def traj(group: int = 0, idx: int = 0, *, correct: bool = False, statuses: tuple[str, ...] = (), skipped: int = 0,
         answer: str | None = "x", finish: str = "eos", tail: str = "model", text: str = "",
         version: int = 0) -> Trajectory:
    """A valid trajectory: a model turn per tool call (4 sampled tokens), each followed by its 2-token output
    block; then a final model turn (tail='model') or none (tail='tool': it ends on an output block)."""
    ids, mask, segs, calls = [], [], [], []

    def add(kind: str, n: int) -> int:
        segs.append(Segment(kind, len(ids), len(ids) + n))
        ids.extend(range(5, 5 + n))
        mask.extend([1 if kind == "model" else 0] * n)
        return len(segs) - 1

    for st in statuses:
        add("model", 4)
        calls.append(ToolCall(code="print(1)", status=st, executed=True, output_segment=add("tool", 2)))
    for _ in range(skipped):
        add("model", 4)
        calls.append(ToolCall(code="print(2)", status="skipped", executed=False, output_segment=add("tool", 2)))
    if tail == "model":
        add("model", 3)
    t = Trajectory(problem_id=f"p{group}", prompt_ids=[1, 2], response_ids=ids, loss_mask=mask,
                   logprobs=[-0.5 if m else 0.0 for m in mask], segments=segs, tool_calls=calls,
                   finish_reason=finish, response_text=text, group_id=group, sample_index=idx, policy_version=version,
                   reward=1.0 if correct else 0.0, correct=correct, answer=answer)
    t.validate()
    return t


# ------------------------------------------------------------------------------------------ typed predicates


def test_tool_errors_and_format_issues_read_statuses_not_text():
    t = traj(statuses=("ok", "error", "timeout", "oom", "killed", "sandbox_error"))
    assert tool_errors(t) == 4                      # sandbox_error is infrastructure, not the code's fault
    # the text shouts "Error" but every call ran fine: no tool error
    assert tool_errors(traj(statuses=("ok", "ok"), text="Traceback ... NameError: Error error")) == 0
    assert format_issues(traj(statuses=("ok",))) == 0
    assert format_issues(traj(statuses=("ok",), skipped=2)) == 2           # code written past the tool budget
    assert format_issues(traj(answer=None, finish="length")) == 2          # cut by the budget, and no answer


@pytest.mark.parametrize("kwargs, void", [
    (dict(answer=None), True),                                  # one text turn, no answer, ended (eos)
    (dict(answer=None, finish="stop"), True),
    (dict(answer="7"), False),                                  # the turn gave the final answer
    (dict(statuses=("ok",), answer=None), True),                # code, output, then a turn with nothing
    (dict(statuses=("ok",), answer="7"), False),
    (dict(statuses=("ok",), answer=None, tail="tool", finish="stop"), False),   # ended on a code block's output
    (dict(answer=None, finish="length"), False),                # cut by the length budget: the overlong filter's
])
def test_void_turn_cases(kwargs, void):
    assert has_void_turn(traj(**kwargs)) is void


def test_void_turn_code_block_closing_the_last_turn_unrun():
    # tool budget spent with an empty budget message: the code block is recorded, skipped, no output segment
    t = traj(statuses=("ok",), answer=None, finish="stop")
    t.tool_calls.append(ToolCall(code="print(3)", status="skipped", executed=False))
    t.validate()
    assert not has_void_turn(t)


# ------------------------------------------------------------------------------------------ roc


@pytest.mark.parametrize("good, bad, keep, want", [
    (3, 5, 4, (2, 2)),      # 4·3/8 = 1.5 → 2
    (1, 7, 4, (1, 3)),      # 0.5 → 1
    (1, 15, 4, (1, 3)),     # 0.25 → 0, but a correct one exists: keep one
    (7, 1, 4, (3, 1)),      # 3.5 → 4, but a failure exists: keep one
    (0, 8, 4, (0, 4)),
    (8, 0, 4, (4, 0)),
    (1, 2, 4, (1, 2)),      # no more than keep: the whole group
])
def test_roc_split_hand(good, bad, keep, want):
    assert roc_split(good, bad, keep) == want


def roc_group(version: int = 0) -> list[Trajectory]:
    return [traj(idx=0, correct=True, statuses=("error", "error")),
            traj(idx=1, correct=True, statuses=("ok", "ok")),
            traj(idx=2, correct=True, statuses=("ok", "timeout"), version=version),
            traj(idx=3, correct=True, statuses=("ok",), skipped=1),    # no tool error, one format issue
            *[traj(idx=i, statuses=("error",)) for i in range(4, 8)]]


def test_roc_keeps_cleanest_correct_and_a_uniform_share_of_failures():
    group = roc_group()
    kept = roc_filter(group, 4)
    # 4 correct, 4 failed of 8, keep 4: 2 correct — idx 1 (0 errors, 0 format), idx 3 (0 errors, 1 format issue)
    assert [t.sample_index for t in kept if t.correct] == [1, 3]
    failed = [t.sample_index for t in kept if not t.correct]
    assert len(failed) == 2 and set(failed) <= {4, 5, 6, 7}
    assert [t.sample_index for t in kept] == sorted(t.sample_index for t in kept)
    assert [t.sample_index for t in roc_filter(roc_group(), 4)] == [t.sample_index for t in kept]   # seeded


def test_roc_failure_subset_is_uniform():
    # over many groups every failure is kept about equally often (2 of 4 each time: 50%)
    hits = dict.fromkeys(range(4, 8), 0)
    for g in range(400):
        group = [dataclasses.replace(t, group_id=g, problem_id=f"q{g}") for t in roc_group()]
        for t in roc_filter(group, 4):
            if not t.correct:
                hits[t.sample_index] += 1
    assert all(170 < h < 230 for h in hits.values()), hits


def test_roc_advantages_come_from_the_kept_set_only():
    group = roc_group()
    res = filter_trajectories(group, AlgoConfig(filters=["roc"]), group_size=4)
    kept = list(res.kept)
    assert len(kept) == 4
    adv = compute_advantages(collate(kept, pad_id=0), AlgoConfig(name="dr_grpo")).advantages
    # kept rewards [1, 1, 0, 0]: baseline 0.5 (the oversampled group's mean would be 4/8 too, so check grpo's std)
    torch.testing.assert_close(adv[:, 0], torch.tensor([0.5, 0.5, -0.5, -0.5]))
    skew = [t for t in group if t.sample_index != 0]          # 3 correct, 4 failed: kept 2 + 2 → mean .5, not 3/7
    kept = list(filter_trajectories(skew, AlgoConfig(filters=["roc"]), group_size=4).kept)
    adv = compute_advantages(collate(kept, pad_id=0), AlgoConfig(name="dr_grpo")).advantages
    torch.testing.assert_close(adv[:, 0], torch.tensor([0.5, 0.5, -0.5, -0.5]))
    adv = compute_advantages(collate(kept, pad_id=0), AlgoConfig(name="grpo")).advantages
    std = (4 * 0.25 / 3) ** 0.5                                # unbiased std of [1, 1, 0, 0]
    torch.testing.assert_close(adv[:, 0], torch.tensor([0.5, 0.5, -0.5, -0.5]) / (std + 1e-6))


def _drop_count(res: FilterResult, caplog, name: str) -> int:
    """The filter's drop count: its FilterResult field once records carries it, else the filters' log line."""
    if name in {f.name for f in dataclasses.fields(FilterResult)}:
        return int(res.metrics()[f"filter/{name}"])
    for rec in caplog.records:
        for part in rec.getMessage().split():
            if part.startswith(f"{name}="):
                return int(part.split("=")[1].rstrip(","))
    raise AssertionError(f"{name} neither in FilterResult nor logged")


def test_roc_and_void_counts_and_composition_with_dynamic_sampling(caplog):
    caplog.set_level(logging.INFO, logger="zerotir.filters")
    trajs = [*roc_group(),                                                    # group 0: 8 → 4, mixed
             *[traj(1, i, correct=True, statuses=("ok",)) for i in range(8)]]  # group 1: all right → uniform
    cfg = AlgoConfig(filters=["void_turns", "roc"], dynamic_sampling=True)
    before = [dataclasses.asdict(t) for t in trajs]
    res = filter_trajectories(trajs, cfg, group_size=4)
    assert {t.group_id for t in res.kept} == {0} and len(res.kept) == 4
    assert res.dropped_uniform_groups == 1
    assert _drop_count(res, caplog, "dropped_roc") == 8           # 4 of each oversampled group
    assert [dataclasses.asdict(t) for t in trajs] == before       # inputs untouched


def test_void_turns_then_dynamic_sampling_drops_a_group_left_uniform(caplog):
    caplog.set_level(logging.INFO, logger="zerotir.filters")
    trajs = [traj(0, 0, correct=True), traj(0, 1, answer=None), traj(0, 2, statuses=("ok",), answer="3"),
             traj(1, 0, correct=True), traj(1, 1, statuses=("error",), answer=None)]   # group 1 loses its failure
    res = filter_trajectories(trajs, AlgoConfig(filters=["void_turns"], dynamic_sampling=True))
    assert [(t.group_id, t.sample_index) for t in res.kept] == [(0, 0), (0, 2)]
    assert res.dropped_uniform_groups == 1
    assert _drop_count(res, caplog, "dropped_void_turns") == 2
    # advantages of group 0 come from its two survivors: rewards [1, 0] → ±0.5 (with the void one, 1/3 baseline)
    adv = compute_advantages(collate(list(res.kept), pad_id=0), AlgoConfig(name="dr_grpo")).advantages
    torch.testing.assert_close(adv[:, 0], torch.tensor([0.5, -0.5]))


def test_no_tool_filters_changes_nothing():
    trajs = roc_group()
    assert filter_trajectories(trajs, AlgoConfig()).kept == tuple(trajs)


# ------------------------------------------------------------------------------------------ wiring and errors


def test_samples_per_prompt_oversamples_for_roc_only():
    cfg = Config()
    cfg.rollout.n_samples, cfg.algo.roc_oversample = 4, 3
    assert samples_per_prompt(cfg) == 4
    cfg.algo.filters = ["void_turns"]
    assert samples_per_prompt(cfg) == 4
    cfg.algo.filters = ["void_turns", "roc"]
    assert samples_per_prompt(cfg) == 12


def test_config_errors_name_the_field():
    assert set(TOOL_FILTERS) == {"roc", "void_turns"}
    with pytest.raises(ValueError, match="algo.filters: unknown filter 'rock'"):
        check_filter_config(AlgoConfig(filters=["rock"]))
    with pytest.raises(ValueError, match="named twice"):
        check_filter_config(AlgoConfig(filters=["roc", "roc"]))
    with pytest.raises(ValueError, match="algo.roc_oversample"):
        check_filter_config(AlgoConfig(filters=["roc"], roc_oversample=0))
    with pytest.raises(ValueError, match="group_size"):
        filter_trajectories(roc_group(), AlgoConfig(filters=["roc"]))
