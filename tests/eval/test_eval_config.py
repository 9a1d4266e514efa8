"""eval.core.eval_rollout_config: the eval's sampling settings replace the training ones, and branching is off (a
branching training run's held-out eval would otherwise return several leaves per sample and fail its count)."""

from zerotir.config.schema import EvalConfig, RolloutConfig
from zerotir.eval.core import eval_rollout_config


def test_eval_config_of_a_branching_rollout_does_not_branch():
    train = RolloutConfig(temperature=0.7, top_p=0.9, n_samples=8, max_tool_calls=4, branch_factor=3,
                          branch_max_leaves=6, max_total_tokens=321)
    ev = EvalConfig(samples=2, temperature=0.0, top_p=0.5, max_tool_calls=1)
    got = eval_rollout_config(train, ev)
    assert got.branch_factor == 1
    assert (got.temperature, got.top_p, got.n_samples, got.max_tool_calls) == (0.0, 0.5, 2, 1)
    assert got.max_total_tokens == 321                       # everything else is the training config's
    assert train.branch_factor == 3 and train.n_samples == 8  # a copy: the training config is untouched
