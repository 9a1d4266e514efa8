"""Metric sinks besides metrics.jsonl: TensorBoard event files and W&B offline runs get every numeric metric of each
row at its step; the plain log line is used when stdout is not a terminal."""

from __future__ import annotations

import logging

import pytest

from zerotir.config import Config
from zerotir.train.sinks import Sinks

ROWS = [{"step": 1, "reward/accuracy": 0.25, "loss/total": 1.5, "note": "text is skipped"},
        {"step": 2, "reward/accuracy": 0.5, "loss/total": 1.0}]


def test_tensorboard_sink_writes_each_metric_at_its_step(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = Config().logging
    cfg.tensorboard, cfg.live = True, False
    with Sinks(tmp_path, cfg) as sinks:
        assert sinks.tb is not None
        for r in ROWS:
            sinks.write(dict(r))
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["loss/total", "reward/accuracy"]
    assert [(e.step, e.value) for e in acc.Scalars("reward/accuracy")] == [(1, 0.25), (2, 0.5)]
    assert [(e.step, e.value) for e in acc.Scalars("loss/total")] == [(1, 1.5), (2, 1.0)]


def test_wandb_sink_runs_offline_and_records_the_history(tmp_path, monkeypatch, caplog):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = Config().logging
    cfg.wandb, cfg.live, cfg.wandb_mode = True, False, "offline"   # never online from a test, logged in or not
    with caplog.at_level(logging.INFO, logger="zerotir"):
        with Sinks(tmp_path, cfg, {"algo": {"name": "grpo"}}) as sinks:
            assert sinks.wandb is not None
            for r in ROWS:
                sinks.write(dict(r))
    # wandb's core process may still be writing behind finish() (the file held only its header right after, once,
    # on a loaded machine); teardown waits for it, as the atexit hook does when a training process ends.
    wandb.teardown()
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1                      # offline: a local run file, nothing sent
    # history records carry each key and its JSON value; the config goes in too
    needles = (b"reward/accuracy", b"loss/total", b"0.25", b"1.5", b"grpo")
    data = runs[0].read_bytes()
    for needle in needles:
        assert needle in data, needle
    assert any("step 2" in m and "acc=0.500" in m for m in caplog.messages)   # the plain log line (no tty)
