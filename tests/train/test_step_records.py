"""Step records and THE metrics module: hand-computed figures, exact merging of shards/refills, rows without an
update, and compute accounting against a hand count."""

import pytest

from zerotir.metrics import TRAINING_NAMES, step_row, trajectory_metrics, training_names
from zerotir.records import FilterResult, RolloutResult, UpdateResult, rollout_seed
from zerotir.telemetry import METRICS
from zerotir.train.compute import ComputeTotals, ModelShape, forward_flops, rollout_flops, update_flops
from zerotir.types import Segment, ToolCall, Trajectory


def traj(n_sampled=4, n_tool=0, calls=(), correct=False, answer=None, finish="eos", group=0, prompt=1):
    n = n_sampled + n_tool
    mask = [1] * n_sampled + [0] * n_tool
    segs = [Segment("model", 0, n_sampled)] + ([Segment("tool", n_sampled, n)] if n_tool else [])
    tcs = [ToolCall(code="x", status=s, executed=s != "skipped", output_segment=1 if s != "skipped" else None,
                    duration_s=0.5) for s in calls]
    return Trajectory(problem_id=f"p{group}", prompt_ids=[1] * prompt, response_ids=[2] * n, loss_mask=mask,
                      logprobs=[-1.0 if m else 0.0 for m in mask], segments=segs, tool_calls=tcs, group_id=group,
                      correct=correct, reward=float(correct), answer=answer, finish_reason=finish)


def test_trajectory_metrics_hand_computed():
    trajs = [traj(10, 4, calls=("ok", "error"), correct=True, answer="1"),
             traj(6, 2, calls=("timeout", "skipped"), answer="2"),
             traj(8, 0, finish="length")]
    m = training_names(trajectory_metrics(trajs))
    assert set(m) <= set(METRICS) and len(m) == len(TRAINING_NAMES)
    assert m["rollout/code_ratio"] == 2 / 3
    assert m["rollout/tool_calls_per_response"] == 1.0          # (2 + 1 + 0) / 3
    assert m["rollout/tool_error_rate"] == 1 / 3                 # 1 error of 3 executed
    assert m["rollout/tool_timeouts"] == 1.0
    assert m["rollout/budget_exceeded_calls"] == 1.0
    assert m["rollout/response_tokens"] == 8.0                   # (10 + 6 + 8) / 3
    assert m["rollout/tool_tokens"] == 2.0                       # (4 + 2 + 0) / 3
    assert m["rollout/truncation_rate"] == 1 / 3
    assert m["perf/tool_seconds"] == 1.5
    assert m["reward/accuracy"] == 1 / 3 and m["reward/format"] == 2 / 3
    assert m["reward/accuracy_with_code"] == 0.5 and m["reward/accuracy_without_code"] == 0.0
    assert trajectory_metrics(trajs)["tool_timeout_rate"] == 1 / 3
    assert all(v == 0.0 for v in trajectory_metrics([]).values())


def test_shards_with_unequal_code_counts_give_the_exact_conditional_accuracy():
    """Shard A: 1 code trajectory (correct) of 4; shard B: 3 code trajectories (wrong) of 4. Averaging the shards'
    accuracy_with_code by shard size gives 0.5; the truth is 1 correct of 4 code trajectories = 0.25."""
    a = RolloutResult((traj(calls=("ok",), correct=True),) + tuple(traj() for _ in range(3)), rollout_seconds=2.0,
                      reward_seconds=0.5, verify_timeouts=1, step=3)
    b = RolloutResult(tuple(traj(calls=("ok",)) for _ in range(3)) + (traj(correct=True),), rollout_seconds=5.0,
                      reward_seconds=0.25, verify_timeouts=2, step=3)
    joined = RolloutResult.concat([a, b], parallel=True)
    m = training_names(trajectory_metrics(joined.trajectories))
    assert m["reward/accuracy_with_code"] == 0.25
    assert m["reward/accuracy_without_code"] == 0.25             # 1 correct of 4 text-only
    assert m["reward/accuracy"] == 0.25 and m["rollout/num_trajectories"] == 8
    assert joined.verify_timeouts == 3 and joined.step == 3
    assert joined.rollout_seconds == 5.0 and joined.reward_seconds == 0.5     # parallel: the slowest shard
    seq = RolloutResult.concat([a, b])
    assert seq.rollout_seconds == 7.0 and seq.reward_seconds == 0.75          # one after the other: they add


def test_filter_results_add():
    f = FilterResult.concat([FilterResult((traj(group=0), traj(group=0)), 1, 2, 0),
                             FilterResult((traj(group=5),), 0, 1, 1)])
    assert f.groups == 2
    assert f.metrics() == {"filter/kept": 3.0, "filter/dropped_sandbox_errors": 1.0,
                           "filter/dropped_uniform_groups": 3.0, "filter/dropped_overlong": 1.0,
                           "filter/dropped_roc": 0.0, "filter/dropped_void_turns": 0.0}


def test_row_without_update_omits_loss_and_optim():
    r = RolloutResult((traj(correct=True), traj()), rollout_seconds=1.0)
    row = step_row(2, 0, r, FilterResult(()), UpdateResult(), None, update_seconds=0.0, step_seconds=1.5,
                   compute=ComputeTotals().row(10))
    assert not [k for k in row if k.startswith(("loss/", "optim/", "eval/"))]
    assert row["reward/accuracy"] == 0.5 and row["perf/tokens_per_second"] == 8.0
    assert all(k in METRICS for k in row)
    up = UpdateResult(steps=({"loss/policy": 1.0, "loss/is_ratio_max": 2.0, "optim/lr": 0.1},
                             {"loss/policy": 3.0, "loss/is_ratio_max": 1.5, "optim/lr": 0.1}))
    row = step_row(2, 0, r, FilterResult(()), up, None, update_seconds=0.0, step_seconds=1.5, compute={})
    assert row["loss/policy"] == 2.0 and row["loss/is_ratio_max"] == 2.0 and row["optim/lr"] == 0.1


def test_rollout_seed_formula():
    assert rollout_seed(0, 0, 0) == 0
    assert rollout_seed(2, 3, 1) == 2 * 1_000_003 + 303 + 1


def test_forward_flops_hand_count():
    s = ModelShape(params=1000, layers=2, attn_dim=8)
    # 3 tokens at positions 4, 5, 6: 2·1000·3 + 4·2·8·(4+5+6)
    assert forward_flops(s, 4, 3) == 6000 + 64 * 15
    assert forward_flops(s, 0, 1) == 2000                            # the first token attends to nothing before it
    assert forward_flops(s, 7, 0) == 0.0


def test_rollout_and_update_flops_hand_count():
    s = ModelShape(params=100, layers=1, attn_dim=2)
    # group 0: prompt 2, responses of 3 and 1 tokens; group 1: prompt 1, response 2 tokens
    trajs = [traj(3, group=0, prompt=2), traj(1, group=0, prompt=2), traj(2, group=1, prompt=1)]
    prefill = forward_flops(s, 0, 2) + forward_flops(s, 0, 1)       # once per group
    responses = forward_flops(s, 2, 3) + forward_flops(s, 2, 1) + forward_flops(s, 1, 2)
    assert rollout_flops(s, trajs) == prefill + responses
    # update: 2 epochs, shared prompts, a reference forward, no critic: (1 + 3·2) forwards of the batch
    flops, tokens = update_flops(s, trajs, epochs=2, shared_prompts=True, forward_only_passes=1, critic=False)
    assert flops == pytest.approx(7 * (prefill + responses))
    assert tokens == 2 * (6 + 3)                                     # 6 response tokens + prompts 2 + 1, per epoch
    flops_rows, tokens_rows = update_flops(s, trajs, epochs=1, shared_prompts=False, forward_only_passes=0,
                                           critic=True)
    per_row = responses + 2 * forward_flops(s, 0, 2) + forward_flops(s, 0, 1)
    assert flops_rows == pytest.approx(6 * per_row) and tokens_rows == 6 + 5   # critic trains too: 2 × 3
    assert update_flops(s, [], epochs=1, shared_prompts=True, forward_only_passes=1, critic=False) == (0.0, 0)


def test_compute_totals_round_trip_through_checkpoint_state():
    t = ComputeTotals().add(10.0, 3, 1.5, 2.0).add(5.0, 1, 0.5, 0.25)
    assert (t.flops, t.tokens, t.seconds, t.cpu_seconds) == (15.0, 4, 2.0, 2.25)
    assert ComputeTotals.from_state(t.state()) == t and ComputeTotals.from_state(None) == ComputeTotals()
    assert t.row(7)["model/params"] == 7.0 and t.row(7)["compute/tokens"] == 4.0
