"""`zerotir eval` end to end: a real model, the real rollout, sandbox and reward, two benchmarks, a tool-budget
sweep, the written files, resuming after an interruption, and the errors users see."""

import csv
import json

import pytest
from typer.testing import CliRunner

from zerotir.cli import app
from zerotir.models import TOY_BASE_DIR

runner = CliRunner()


def _model_args(tiny_model_dir):
    """The toy base when it has been built (its own template), else the tiny random model (zerotir template)."""
    if (TOY_BASE_DIR / "config.json").is_file():
        return ["--model", "toy", "--set", "rollout.max_total_tokens=96", "--set", "rollout.max_new_tokens_per_turn=64"]
    return ["--model", str(tiny_model_dir), "--set", "rollout.max_total_tokens=40",
            "--set", "rollout.max_new_tokens_per_turn=24", "--set", "rollout.max_tool_output_tokens=16"]


def _lines(path):
    return [line for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.integration
def test_eval_two_benchmarks_sweep_and_resume(tiny_model_dir, shared_data, tmp_path):
    out = tmp_path / "ev"
    args = ["eval", *_model_args(tiny_model_dir), "--benchmarks", "toy:heldout,math500", "--samples", "2",
            "--max-tool-calls", "0,1", "--limit", "2", "--data-dir", str(shared_data / "benchmarks"),
            "--out", str(out), "--no-progress", "--device", "cpu", "--set", "sandbox.workers=1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)

    files = sorted(p.name for p in (out / "samples").iterdir())
    assert files == ["math500.tools0.jsonl", "math500.tools1.jsonl", "toy_heldout.tools0.jsonl",
                     "toy_heldout.tools1.jsonl"]
    for name in files:
        rows = [json.loads(x) for x in _lines(out / "samples" / name)]
        assert len(rows) == 4  # 2 problems x 2 samples
        assert sorted((r["problem_id"], r["sample_index"]) for r in rows) == sorted(
            {(r["problem_id"], i) for r in rows for i in range(2)})
        for r in rows:
            assert "reward" in r and isinstance(r["correct"], bool) and r["response_ids"]
            if name.endswith("tools0.jsonl"):
                assert all(not c["executed"] for c in r["tool_calls"])  # budget 0: nothing runs

    md = (out / "results.md").read_text()
    assert "| Eval Env. Iter. | toy:heldout | MATH500 | Avg | Code ratio |" in md
    assert md.count("\n| 0 | ") >= 1 and md.count("\n| 1 | ") >= 1
    table = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["max_tool_calls"], r["benchmark"]) for r in table] == [
        ("0", "toy:heldout"), ("0", "math500"), ("1", "toy:heldout"), ("1", "math500"), ("0", "avg"), ("1", "avg")]
    for r in table[:4]:
        assert 0.0 <= float(r["accuracy"]) <= float(r["pass@2"]) <= 1.0
        assert float(r["response_tokens"]) > 0
    assert float(table[0]["code_ratio"]) == 0.0
    assert len(_lines(out / "per_problem.jsonl")) == 8

    # ---- interrupted run: the last problem of one file lost, plus a half-written line; resume redoes only that
    target = out / "samples" / "math500.tools1.jsonl"
    rows = _lines(target)
    last_pid = json.loads(rows[-1])["problem_id"]
    kept = [x for x in rows if json.loads(x)["problem_id"] != last_pid]
    target.write_text("".join(x + "\n" for x in kept) + '{"problem_id": "trunc')
    untouched = {n: (out / "samples" / n).read_text() for n in files if n != target.name}
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    after = _lines(target)
    assert after[:len(kept)] == kept and len(after) == 4
    assert {json.loads(x)["problem_id"] for x in after[len(kept):]} == {last_pid}
    assert all((out / "samples" / n).read_text() == txt for n, txt in untouched.items())

    # ---- a changed setting in the same out dir is refused, naming it
    res = runner.invoke(app, args + ["--temperature", "0.5"])
    assert res.exit_code == 2 and "temperature: 1.0 → 0.5" in res.output


def test_eval_cli_errors(tiny_model_dir, shared_data, tmp_path):
    base = ["eval", "--out", str(tmp_path / "o"), "--no-progress"]
    res = runner.invoke(app, base + ["--model", str(tiny_model_dir), "--benchmarks", "math500,aime2024"])
    assert res.exit_code == 2 and "unknown benchmark 'aime2024'" in res.output and "aime24" in res.output
    res = runner.invoke(app, base + ["--model", str(tmp_path / "nope"), "--benchmarks", "math500",
                                     "--data-dir", str(shared_data / "benchmarks")])
    assert res.exit_code == 2 and "model directory not found" in res.output
    res = runner.invoke(app, base + ["--model", str(tiny_model_dir), "--benchmarks", "math500",
                                     "--data-dir", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "data dir not found" in res.output
    res = runner.invoke(app, ["eval", "--list"])
    assert res.exit_code == 0 and "olympiadbench" in res.output and "gsm8k" in res.output
