"""Prompt sampler cursor, minibatch split, and atomic checkpoints."""

import os

import torch

from zerotir.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from zerotir.train.learner import Learner
from zerotir.train.stats import PromptSampler, split_minibatches
from zerotir.types import Problem

from .conftest import tiny_cfg


def test_sampler_cursor_resumes_same_sequence():
    probs = [Problem(id=str(i), prompt=f"q{i}", answer=str(i)) for i in range(5)]
    a = PromptSampler(probs, seed=3)
    first = [p.id for p in a.take(3)] + [p.id for p in a.take(4)]  # crosses into epoch 1
    assert sorted(first[:5]) == ["0", "1", "2", "3", "4"] and a.epoch == 1 and a.pos == 2
    b = PromptSampler(probs, seed=3)
    b.take(3)
    c = PromptSampler(probs, seed=3)
    c.restore(b.cursor)
    assert [p.id for p in c.take(4)] == first[3:]
    assert [p.id for p in PromptSampler(probs, shuffle=False).take(6)] == ["0", "1", "2", "3", "4", "0"]


def test_split_minibatches_partition():
    parts = split_minibatches(10, 3, (0, 1, 0))
    assert sorted(i for p in parts for i in p) == list(range(10)) and [len(p) for p in parts] == [4, 3, 3]
    assert parts == split_minibatches(10, 3, (0, 1, 0)) and parts != split_minibatches(10, 3, (0, 2, 0))
    assert len(split_minibatches(2, 5, (0,))) == 2


def _touch_optimizer(learner):
    ids = torch.tensor([[3, 4, 5, 6]])
    learner.policy(input_ids=ids).logits.float().pow(2).mean().backward()
    learner.optimizer.step()
    learner.scheduler.step()
    learner.optimizer.zero_grad()


def test_checkpoint_roundtrip_atomic_and_pruned(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, optim__warmup_steps=3)
    a = Learner(cfg)
    _touch_optimizer(a)
    torch.manual_seed(123)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, a, {"data_cursor": {"epoch": 0, "pos": step}}, keep=2)
    # a killed run's temporary directory is ignored, then cleaned up by the next save
    os.makedirs(tmp_path / "checkpoints" / ".step_000009.tmp-999999")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000002", "step_000003"]
    after_save = torch.rand(3)

    b = Learner(cfg)
    state = load_checkpoint(latest_checkpoint(tmp_path), b)
    assert state["step"] == 3 and state["data_cursor"]["pos"] == 3
    assert torch.equal(torch.rand(3), after_save)  # RNG restored to the moment of saving
    for (n, p), (_, q) in zip(a.policy.named_parameters(), b.policy.named_parameters()):
        assert torch.equal(p, q), n
    assert b.scheduler.get_last_lr() == a.scheduler.get_last_lr()
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)
    save_checkpoint(tmp_path, 4, b, {"data_cursor": {"epoch": 0, "pos": 4}}, keep=2)
    assert not list((tmp_path / "checkpoints").glob(".step_*"))
    # the policy dir is a loadable HF model directory
    from zerotir.models import load_model_and_tokenizer

    m, tok = load_model_and_tokenizer(latest_checkpoint(tmp_path) / "policy", "cpu")
    assert tok.pad_token_id is not None and m.config.vocab_size == a.policy.config.vocab_size


def test_live_table_renders_rows(tmp_path, monkeypatch):
    import io
    import sys
    from types import SimpleNamespace

    from rich.console import Console

    from zerotir.train.sinks import Sinks

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    cfg = SimpleNamespace(live=True, tensorboard=False, wandb=False, wandb_project="x")
    sinks = Sinks(tmp_path, cfg)
    assert sinks.live is not None
    with sinks:
        sinks.write({"step": 1, "reward/mean": 0.25, "rollout/code_ratio": 0.5, "rollout/response_tokens": 31.0,
                     "rollout/tool_error_rate": 0.1})
        sinks.write({"step": 2, "reward/mean": 0.5, "eval/accuracy": 0.75})
    buf = io.StringIO()
    Console(file=buf, width=200).print(sinks.live)
    text = buf.getvalue()
    assert "0.250" in text and "0.50" in text and "31.0" in text and "0.750" in text


def test_lora_checkpoint_roundtrip(tiny_model_dir, tiny_batch, tmp_path):
    """LoRA runs checkpoint the adapter (trainer.pt) and a merged HF policy dir; resuming restores the adapter."""
    _, batch = tiny_batch
    cfg = tiny_cfg(tiny_model_dir, model__lora_rank=4)
    a = Learner(cfg)
    a.update(batch)
    save_checkpoint(tmp_path, 1, a, {"data_cursor": {"epoch": 0, "pos": 0}})
    b = Learner(cfg)
    assert not torch.allclose(b.logprobs(batch), a.logprobs(batch))
    load_checkpoint(latest_checkpoint(tmp_path), b)
    torch.testing.assert_close(b.logprobs(batch), a.logprobs(batch))
    from zerotir.models import load_model_and_tokenizer

    merged, tok = load_model_and_tokenizer(latest_checkpoint(tmp_path) / "policy", "cpu")
    plain = Learner(tiny_cfg(tiny_model_dir), model=merged, tokenizer=tok)
    torch.testing.assert_close(plain.logprobs(batch), a.logprobs(batch), atol=1e-5, rtol=1e-4)


def test_resolve_run_dir_for_resume(tmp_path, monkeypatch):
    import time

    import pytest

    from zerotir.config import Config
    from zerotir.train.loop import resolve_run_dir

    monkeypatch.chdir(tmp_path)
    cfg = Config()
    cfg.train.name = "exp"
    for name, steps in (("exp-1", [2]), ("exp-2", [1, 3]), ("exp-3", []), ("other-1", [9])):
        (tmp_path / "runs" / name).mkdir(parents=True)
        for s in steps:
            d = tmp_path / "runs" / name / "checkpoints" / f"step_{s:06d}"
            d.mkdir(parents=True)
            (d / "state.json").write_text("{}")
            time.sleep(0.01)
    run, ckpt = resolve_run_dir(cfg, True, None)  # newest run of this name that has a checkpoint
    assert run.name == "exp-2" and ckpt.name == "step_000003"
    run, ckpt = resolve_run_dir(cfg, "runs/exp-2/checkpoints/step_000001", None)
    assert run.name == "exp-2" and ckpt.name == "step_000001"
    run, ckpt = resolve_run_dir(cfg, "runs/exp-3", None)  # killed before its first checkpoint: start over there
    assert run.name == "exp-3" and ckpt is None
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        resolve_run_dir(cfg, "runs/nope", None)
    with pytest.raises(FileExistsError, match="use --resume"):
        resolve_run_dir(cfg, False, "runs/exp-1")
