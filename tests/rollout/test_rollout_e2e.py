"""End to end: real tiny HF models, HFEngine, the real sandbox, the TIR loop, the CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from zerotir.config import RolloutConfig
from zerotir.rollout.format import OUTPUT_OPEN
from zerotir.rollout.hf_engine import HFEngine
from zerotir.rollout.tir import rollout
from zerotir.types import Problem, Trajectory, read_trajectories

pytestmark = pytest.mark.integration


def check_logprobs_full_forward(model, t: Trajectory) -> None:
    """Behaviour log-probs of every sampled token == a fresh forward over prompt ‖ response (tool tokens included)."""
    ids = t.prompt_ids + t.response_ids
    with torch.no_grad():
        lp = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
    p = len(t.prompt_ids)
    for i, m in enumerate(t.loss_mask):
        if m:
            assert abs(lp[p + i - 1, t.response_ids[i]].item() - t.raw_logprobs[i]) < 1e-4
            assert abs(t.raw_logprobs[i] - t.logprobs[i]) < 1e-4  # temperature 1, no top-k/top-p: same distribution


def test_rollout_tiny_random_model(tiny_model, sandbox):
    model, tok = tiny_model
    eng = HFEngine(model, tok, max_batch=4, seed=0)
    cfg = dataclasses.replace(RolloutConfig(), template="zerotir", max_total_tokens=48, max_new_tokens_per_turn=32)
    probs = [Problem(id=f"p{i}", prompt=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(3)]
    trajs = rollout(probs, eng, sandbox, cfg, n_samples=3, max_tool_calls=2, group_offset=10, seed=5)
    assert [(t.group_id, t.sample_index) for t in trajs] == [(10 + g, s) for g in range(3) for s in range(3)]
    again = rollout(probs, HFEngine(model, tok, max_batch=9), sandbox, cfg, n_samples=3, max_tool_calls=2,
                    group_offset=10, seed=5)
    assert [t.response_ids for t in trajs] == [t.response_ids for t in again]  # seeded: batching doesn't matter
    for t in trajs:
        t.validate()
        assert len(t.response_ids) <= 48 and t.gold_answer and t.prompt_text.endswith("Assistant: <think>")
        check_logprobs_full_forward(model, t)


def test_rollout_with_tool_calls(tool_model, sandbox):
    """The format-trained tiny model writes python blocks: they run in the real sandbox, their output is inserted,
    and the log-probs after insertions still match a fresh forward pass (cache reuse is exact)."""
    model, tok = tool_model
    eng = HFEngine(model, tok, max_batch=16, seed=0)
    cfg = dataclasses.replace(RolloutConfig(), template="toy", max_total_tokens=160, max_new_tokens_per_turn=80)
    probs = [Problem(id=f"p{i}", prompt=f"What is {i + 13}*{i + 27}?", answer=str((i + 13) * (i + 27)))
             for i in range(4)]
    trajs = rollout(probs, eng, sandbox, cfg, n_samples=4, max_tool_calls=1, seed=3)
    executed = [c for t in trajs for c in t.tool_calls if c.executed]
    assert len(executed) >= 4, [t.response_text for t in trajs]
    assert eng.stats["reused_tokens"] > 0
    for t in trajs:
        t.validate()
        check_logprobs_full_forward(model, t)
        tool_texts = [tok.decode(t.response_ids[s.start:s.end]) for s in t.segments if s.kind == "tool"]
        assert len(tool_texts) == len([c for c in t.tool_calls if c.output_segment is not None])
        assert all(x.startswith(OUTPUT_OPEN) and x.count(OUTPUT_OPEN) == 1 for x in tool_texts)
    for c in executed[:4]:
        want = sandbox.run(c.code)
        if want.status == "ok" and not c.truncated:
            assert c.output == want.stdout.rstrip("\n")


class DelayedSandbox:
    """The real sandbox behind a random delay per call: tool timing that differs from run to run."""

    def __init__(self, sandbox, seed: int):
        import random

        self.sandbox, self.rng = sandbox, random.Random(seed)

    async def arun(self, code: str):
        import asyncio

        await asyncio.sleep(self.rng.uniform(0, 0.05))
        return await self.sandbox.arun(code)


def test_deterministic_rollouts_are_bit_identical_whatever_the_tool_timing(tool_model, sandbox):
    """rollout.deterministic: tool calls that come back at other times leave tokens and log-probs bit-identical
    (a continuation rejoins the batch a fixed number of engine steps after it left; threads fixed)."""
    model, tok = tool_model
    cfg = dataclasses.replace(RolloutConfig(), template="toy", max_total_tokens=160, max_new_tokens_per_turn=80,
                              stateful_tools=False, deterministic=True)
    probs = [Problem(id=f"p{i}", prompt=f"What is {i + 13}*{i + 27}?", answer=str((i + 13) * (i + 27)))
             for i in range(4)]
    runs = [rollout(probs, HFEngine(model, tok, max_batch=16, seed=0, cpu_threads=1), DelayedSandbox(sandbox, s),
                    cfg, n_samples=4, max_tool_calls=2, seed=3) for s in (1, 2)]
    assert sum(c.executed for t in runs[0] for c in t.tool_calls) >= 4
    for a, b in zip(*runs):
        assert (a.response_ids, a.logprobs, a.raw_logprobs) == (b.response_ids, b.logprobs, b.raw_logprobs)


def test_cli_writes_trajectories(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from zerotir.cli import app

    probs = tmp_path / "p.jsonl"
    probs.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"What is {i}+1?", "answer": str(i + 1)}) + "\n"
                             for i in range(2)))
    out = tmp_path / "traj.jsonl"
    res = CliRunner().invoke(app, ["rollout", "--model", str(tiny_model_dir), "--problems", str(probs), "--n", "2",
                                   "--max-tool-calls", "1", "--max-total-tokens", "24", "--out", str(out),
                                   "--device", "cpu", "--show", "1"])
    assert res.exit_code == 0, res.output
    trajs = read_trajectories(out)
    assert len(trajs) == 4 and {t.problem_id for t in trajs} == {"q0", "q1"}
    for t in trajs:
        t.validate()
    assert "4 trajectories" in res.output and "q0" in res.output
    bad = CliRunner().invoke(app, ["rollout", "--model", str(tmp_path / "missing"), "--problems", str(probs)])
    assert bad.exit_code != 0 and "missing" in bad.output
