"""End to end on the tiny model with the real sandbox, rollout, reward and algos: 3 steps change the parameters and
write every metric; a run killed with SIGKILL mid-way resumes to exactly the uninterrupted run."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from zerotir.config import save_config
from zerotir.telemetry import read_metrics

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# The names issue 5 requires in every metrics.jsonl row.
REQUIRED = ["reward/accuracy", "rollout/code_ratio", "rollout/tool_calls_per_response", "rollout/tool_error_rate",
            "rollout/tool_timeouts", "rollout/response_tokens", "rollout/tool_tokens", "loss/policy", "loss/kl",
            "loss/entropy", "loss/total", "loss/clip_fraction", "optim/grad_norm", "optim/lr", "perf/step_seconds",
            "perf/tokens_per_second", "compute/flops", "compute/tokens", "compute/seconds", "compute/cpu_seconds",
            "model/params"]


def policy_weights(d: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.fixture(scope="module")
def tool_model_dir(tmp_path_factory):
    """The tiny model taught the tool format by the rollout stage's fixture (writes python blocks, ends with EOS)."""
    from tests.support.tool_model import make_tool_model

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return make_tool_model(tmp_path_factory.mktemp("tool-model"), steps=100)
    finally:
        torch.set_num_threads(n)


def test_three_steps_change_parameters_and_log_every_metric(tool_model_dir, tmp_path, small_train_cfg):
    """3 steps of the loop on a tiny model that writes code, with the real sandbox, verifier and algos."""
    from zerotir.train.loop import train

    cfg = small_train_cfg(tool_model_dir)
    r = cfg.rollout
    r.template, r.max_new_tokens_per_turn, r.max_total_tokens, r.n_samples = "toy", 40, 96, 4
    other = tmp_path / "other-set.jsonl"
    other.write_text("".join(f'{{"id": "o{i}", "problem": "What is {i} + 5?", "answer": "{i + 5}"}}\n' for i in range(3)))
    cfg.data.eval_extra = [str(other)]
    run = train(cfg, run_dir=str(tmp_path / "run"))
    base, *rows = read_metrics(run / "metrics.jsonl")
    assert base["step"] == 0 and "eval/accuracy" in base and base["compute/flops"] == 0.0   # the base model's eval
    # the extra held-out set is evaluated with data.eval each time, under its own name
    assert all(("eval/other-set/accuracy" in r) == ("eval/accuracy" in r) for r in [base, *rows])
    main = {k.removeprefix("eval/") for k in base if k.startswith("eval/") and k.count("/") == 1}
    assert {"accuracy", "code_ratio"} <= main and all(f"eval/other-set/{k}" in base for k in main)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert 0 < rows[0]["compute/flops"] < rows[1]["compute/flops"] < rows[2]["compute/flops"]
    assert base["model/params"] == rows[-1]["model/params"] > 0
    for r in rows:
        missing = [k for k in REQUIRED if k not in r]
        assert not missing, missing
        assert all(math.isfinite(r[k]) for k in r if k.startswith(("loss/", "optim/")))
        assert r["rollout/num_trajectories"] == 8
    # the model writes code: the real sandbox ran it and its output went back into the responses
    assert sum(r["rollout/tool_calls_per_response"] for r in rows) > 0 and sum(r["rollout/tool_tokens"] for r in rows) > 0
    from zerotir.types import read_trajectories

    trajs = read_trajectories(run / "transcripts" / "step_000001.jsonl")
    executed = [(t, c) for t in trajs for c in t.tool_calls if c.executed]
    assert executed and any(c.status == "ok" for _, c in executed)
    for t, c in executed:  # each output block sits in its own mask-0 segment of the response
        seg = t.segments[c.output_segment]
        assert seg.kind == "tool" and seg.end - seg.start == c.output_tokens > 0
        assert all(m == 0 for m in t.loss_mask[seg.start:seg.end])
    assert "eval/accuracy" in rows[1] and "eval/accuracy" in rows[2] and "eval/accuracy" not in rows[0]
    assert rows[0]["loss/kl"] == pytest.approx(0.0, abs=1e-6)  # first update: policy == reference
    assert any(r["optim/grad_norm"] > 0 for r in rows)
    before = policy_weights(Path(tool_model_dir))
    after = policy_weights(run / "checkpoints" / "step_000003" / "policy")
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2
    assert (run / "config.yaml").is_file() and (run / "transcripts" / "step_000002.jsonl").is_file()
    assert (run / "transcripts" / "step_000002.txt").read_text().startswith("=== problem")


def _cli(args, cwd):
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "zerotir.cli", "train", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _strip(rows):
    """Rows without wall/CPU timings (compute/flops and compute/tokens stay: a resume continues them exactly)."""
    return [{k: v for k, v in r.items() if not k.startswith(("perf/", "compute/seconds", "compute/cpu_seconds"))}
            for r in rows]


def test_sigkill_then_resume_is_identical_to_uninterrupted(tiny_model_dir, tmp_path, small_train_cfg):
    cfg = small_train_cfg(tiny_model_dir, steps=4)
    cfg.train.eval_every = 0
    cfg.data.eval = ""
    cfg.rollout.deterministic = True  # the condition of the bit-identical claim: batches independent of tool timing
    save_config(cfg, tmp_path / "cfg.yaml")

    full = _cli(["--config", str(tmp_path / "cfg.yaml"), "--run-dir", str(tmp_path / "A")], tmp_path)
    out_full, _ = full.communicate(timeout=300)
    assert full.returncode == 0, out_full

    killed = _cli(["--config", str(tmp_path / "cfg.yaml"), "--run-dir", str(tmp_path / "B")], tmp_path)
    marker = tmp_path / "B" / "checkpoints" / "step_000002" / "state.json"
    deadline = time.time() + 240
    while not marker.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert killed.poll() is None, "run finished before it could be killed"
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "B" / "checkpoints" / "step_000004").exists()

    resumed = _cli(["--resume", str(tmp_path / "B")], tmp_path)
    out_res, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out_res
    assert "resumed from" in out_res

    a, b = read_metrics(tmp_path / "A" / "metrics.jsonl"), read_metrics(tmp_path / "B" / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert _strip(a) == _strip(b)
    wa = policy_weights(tmp_path / "A" / "checkpoints" / "step_000004" / "policy")
    wb = policy_weights(tmp_path / "B" / "checkpoints" / "step_000004" / "policy")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ta = (tmp_path / "A" / "transcripts" / "step_000004.jsonl").read_text()
    assert ta == (tmp_path / "B" / "transcripts" / "step_000004.jsonl").read_text()


def test_dynamic_sampling_refills_then_skips_an_all_uniform_step(tiny_model_dir, tmp_path, small_train_cfg):
    """A random tiny model earns no reward, so every group is uniform: the loop draws 2 more prompts 3 times,
    drops all 8 groups, logs it, trains nothing and goes on."""
    from zerotir.train.loop import train

    cfg = small_train_cfg(tiny_model_dir, steps=2)
    cfg.algo.dynamic_sampling = True
    cfg.train.eval_every, cfg.data.eval_limit = 0, 1
    run = train(cfg, run_dir=str(tmp_path / "run"))
    rows = read_metrics(run / "metrics.jsonl")
    train_rows = [r for r in rows if "filter/kept" in r]
    assert [r["step"] for r in train_rows] == [1, 2]
    for r in train_rows:
        assert r["reward/accuracy"] == 0.0
        assert r["filter/dropped_uniform_groups"] == 8.0 and r["filter/kept"] == 0.0
    assert [r["epoch"] for r in train_rows] == [1, 2]   # 8 problems, 2 + 3 x 2 drawn per step: one epoch a step
