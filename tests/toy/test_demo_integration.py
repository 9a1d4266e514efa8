"""Integration: the demo end to end on the shipped toy base with tiny settings (real rollout, sandbox, reward,
learner, eval). A few steps; asserts that parameters changed and that the report pieces exist."""

import json

import pytest

pytestmark = pytest.mark.integration


def test_demo_few_steps(tmp_path):
    import torch
    from safetensors.torch import load_file

    from zerotir.models import TOY_BASE_DIR
    from zerotir.toy.demo import demo_config, run_demo
    from zerotir.train.checkpoint import latest_checkpoint

    cfg = demo_config(seed=0, steps=2, overrides=[
        "train.prompts_per_step=4", "rollout.n_samples=4", "data.eval_limit=8", "train.eval_every=2",
        "rollout.max_total_tokens=128", "train.transcripts_every=1", "logging.live=false", "optim.lr=1e-3"])
    run = run_demo(cfg, tmp_path / "run", analysis=False)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert "eval/accuracy" in rows[0] and "eval/accuracy" in rows[2]
    assert rows[1]["rollout/num_trajectories"] == 16
    report = (run / "report.md").read_text()
    assert "| accuracy |" in report and "start (step 0)" in report and "end (step 2)" in report
    assert (run / "plots" / "curves.png").stat().st_size > 10_000
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2
    # the final policy is also evaluated beyond the training distribution (8 problems each: data.eval_limit)
    gen = json.loads((run / "generalization.json").read_text())
    assert list(gen) == ["toy:heldout", "toy:ood-wording", "toy:ood-size"] and set(summary["generalization"]) == set(gen)
    assert all(0 <= g["eval/accuracy"] <= 1 and g["eval/problems"] == 8 for g in gen.values())
    # why answers were wrong: the kinds partition the responses, and "correct" is the accuracy (1 sample each)
    assert all(sum(g["failures"].values()) == pytest.approx(1) for g in gen.values())
    assert all(g["failures"]["correct"] == pytest.approx(g["eval/accuracy"]) for g in gen.values())
    assert "## Beyond the training distribution" in report and "| toy:ood-wording |" in report
    assert "| toy:heldout (training distribution) |" in report and "| problems | correct | tool_error | no_answer |" in report
    base = load_file(str(TOY_BASE_DIR / "model.safetensors"))
    after = load_file(str(latest_checkpoint(run) / "policy" / "model.safetensors"))
    assert any(not torch.equal(base[k], after[k]) for k in base)
