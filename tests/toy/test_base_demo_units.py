"""Unit tests: base-model builder (loads as an HF dir, seeded), lr schedule, base-check statistics, demo report pieces."""

import json
import math

import pytest

from zerotir.toy.base import BaseSpec, build_base, lr_at
from zerotir.toy.corpus import CorpusSpec
from zerotir.toy.demo import eval_rows, plot_curves, start_end, table_markdown
from zerotir.toy.check import in_target, kind_stats, signal_stats
from zerotir.types import ToolCall, Trajectory


def _tiny_spec(seed=0):
    return BaseSpec(hidden=32, layers=1, heads=2, intermediate=64, seq_len=64, batch=4, steps=3, warmup=1,
                    seed=seed, threads=1, corpus=CorpusSpec(n_docs=300, seed=seed))


def test_build_base_is_an_hf_dir_and_seeded(tmp_path):
    import torch

    from zerotir.models import load_model_and_tokenizer

    build_base(_tiny_spec(0), tmp_path / "a", log=lambda m: None)
    build_base(_tiny_spec(0), tmp_path / "b", log=lambda m: None)
    build_base(_tiny_spec(1), tmp_path / "c", log=lambda m: None)
    ma, tok = load_model_and_tokenizer(tmp_path / "a", device="cpu")
    mb, _ = load_model_and_tokenizer(tmp_path / "b", device="cpu")
    mc, _ = load_model_and_tokenizer(tmp_path / "c", device="cpu")
    sa, sb, sc = ma.state_dict(), mb.state_dict(), mc.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert ma.config.model_type == "qwen2" and tok.eos_token_id == ma.config.eos_token_id
    summary = json.loads((tmp_path / "a" / "build.json").read_text())
    assert summary["spec"]["steps"] == 3 and math.isfinite(summary["final_loss"])


def test_lr_schedule_hand_values():
    s = BaseSpec(lr=1.0, warmup=2, steps=12, min_lr_ratio=0.0)
    assert lr_at(0, s) == 0.5 and lr_at(1, s) == 1.0
    assert lr_at(2, s) == pytest.approx(1.0)
    assert lr_at(7, s) == pytest.approx(0.5)  # halfway through the cosine
    assert lr_at(12, s) == pytest.approx(0.0, abs=1e-12)


def _traj(calls: int, correct: bool, n_tokens: int) -> Trajectory:
    return Trajectory(problem_id="p", prompt_ids=[1], response_ids=[5] * n_tokens, loss_mask=[1] * n_tokens,
                      logprobs=[0.0] * n_tokens, correct=correct,
                      tool_calls=[ToolCall(code="print(1)", status="ok") for _ in range(calls)])


def test_signal_stats_hand_count():
    # 4 responses: code+right, code+wrong, text+right, text+wrong (an unexecuted call does not count as code)
    trajs = [_traj(1, True, 10), _traj(2, False, 20), _traj(0, True, 30), _traj(0, False, 40)]
    trajs[3].tool_calls = [ToolCall(code="x", status="skipped", executed=False)]
    s = signal_stats(trajs)
    assert s == {"n": 4, "code_ratio": 0.5, "accuracy": 0.5, "code_attempt_accuracy": 0.5, "text_accuracy": 0.5,
                 "code_responses": 2, "mean_response_tokens": 25.0}
    assert not in_target(s)                                     # 50% code use: the base already uses the tool
    assert signal_stats([])["code_ratio"] == 0.0
    few = signal_stats([_traj(1, True, 5)] + [_traj(0, False, 5)] * 19)   # 5% code, all of it right
    assert in_target(few)


def test_kind_stats_hand_count():
    trajs = [_traj(1, True, 5), _traj(1, False, 5), _traj(0, True, 5), _traj(2, False, 5), _traj(0, False, 5)]
    for t, pid in zip(trajs, ["m1", "m2", "m3", "l1", "x"]):
        t.problem_id = pid
    by = kind_stats(trajs, {"m1": "mul", "m2": "mul", "m3": "mul", "l1": "lin"})
    assert by == {"mul": {"n": 3, "code_responses": 2, "code_correct": 1},
                  "lin": {"n": 1, "code_responses": 1, "code_correct": 0},
                  "?": {"n": 1, "code_responses": 0, "code_correct": 0}}
    assert list(by)[0] == "mul"   # most frequent first


ROWS = [
    {"step": 0, "policy_version": 0, "eval/accuracy": 0.1, "eval/code_ratio": 0.05,
     "eval/tool_calls_per_response": 0.05, "eval/response_tokens": 50.0},
    {"step": 1, "reward/accuracy": 0.1, "rollout/code_ratio": 0.1, "rollout/tool_calls_per_response": 0.1,
     "rollout/response_tokens": 52.0},
    {"step": 2, "reward/accuracy": 0.6, "rollout/code_ratio": 0.9, "rollout/tool_calls_per_response": 0.9,
     "rollout/response_tokens": 80.0, "eval/accuracy": 0.7, "eval/code_ratio": 0.95,
     "eval/tool_calls_per_response": 1.0, "eval/response_tokens": 81.5},
]


def test_start_end_table_and_plot(tmp_path):
    se = start_end(ROWS)
    assert se["start"]["step"] == 0 and se["end"]["step"] == 2
    assert se["end"]["eval/code_ratio"] == 0.95
    md = table_markdown(se)
    assert "| accuracy | 0.100 | 0.700 |" in md and "| response length (tokens) | 50.0 | 81.5 |" in md
    assert [r["step"] for r in eval_rows(ROWS)] == [0, 2]
    p = plot_curves(ROWS, tmp_path / "plots" / "curves.png")
    assert p.stat().st_size > 10_000
    with pytest.raises(ValueError, match="no held-out eval rows"):
        start_end([ROWS[1]])


def test_demo_cli_prints_the_generalization_table(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import zerotir.toy.demo as demo
    from zerotir.cli import app

    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": 0, "eval/accuracy": 0.04, "eval/code_ratio": 0.02},
            {"step": 25, "eval/accuracy": 0.6, "eval/code_ratio": 0.85, "eval/tool_error_rate": 0.023}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "generalization.json").write_text(json.dumps({
        "toy:ood-wording": {"eval/accuracy": 0.012, "eval/code_ratio": 0.8, "eval/tool_error_rate": 0.098}}))
    monkeypatch.setattr(demo, "run_demo", lambda cfg, run_dir: run)  # the CLI's printing, not training, is tested
    res = CliRunner().invoke(app, ["demo", "--steps", "1"])
    assert res.exit_code == 0, res.output
    assert "| held-out (training distribution) | 0.600 | 0.850 | 0.023 |" in res.output
    assert "| toy:ood-wording | 0.012 | 0.800 | 0.098 |" in res.output
    # a generalization.json with the held-out split and failure kinds: that row replaces the last eval row
    fails = {"correct": 0.5, "tool_error": 0.0, "no_answer": 0.0, "text_wrong": 0.25, "answer_not_output": 0.125,
             "wrong_code": 0.125}
    (run / "generalization.json").write_text(json.dumps({
        "toy:heldout": {"eval/accuracy": 0.5, "eval/code_ratio": 0.75, "eval/tool_error_rate": 0.0, "failures": fails},
        "toy:ood-wording": {"eval/accuracy": 0.012, "eval/code_ratio": 0.8, "eval/tool_error_rate": 0.098}}))
    res = CliRunner().invoke(app, ["demo", "--steps", "1"])
    assert "held-out (training distribution) | 0.600" not in res.output
    assert "| toy:heldout (training distribution) | 0.500 | 0.750 | 0.000 |" in res.output
    assert "| toy:heldout (training distribution) | 0.500 | 0.000 | 0.000 | 0.250 | 0.125 | 0.125 |" in res.output


def test_demo_config_carries_the_demos_curriculum_and_budget():
    from zerotir.toy.demo import demo_config

    cfg = demo_config(seed=3)
    assert (cfg.model.path, cfg.data.train) == ("toy-0.8m-diverse", "toy:train-diverse")
    assert (cfg.train.steps, cfg.train.eval_every, cfg.train.seed) == (30, 6, 3)
    assert cfg.sandbox.preimport == []  # the toy preset's lean sandbox workers
    assert demo_config(steps=4).train.steps == 4
    cut = demo_config(no_tools=True, overrides=["train.eval_every=5", "model.path=toy"])
    assert (cut.train.eval_every, cut.model.path, cut.rollout.max_tool_calls, cut.eval.max_tool_calls) == (5, "toy", 0, 0)
