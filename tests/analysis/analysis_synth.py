"""Synthetic run directories for the analysis tests: a real config.yaml (save_config) and a metrics.jsonl that
follows known laws plus noise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from zerotir.config import Config, save_config


def write_run(path: Path, seed: int, max_tool_calls: int, steps: int = 40, eval_every: int = 5,
              partial_last_line: bool = False, base_row: bool = False) -> Path:
    """Tools runs: accuracy saturates, code use rises, length grows log-linearly; no-tools runs stay flat."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.train.seed = seed
    cfg.train.name = f"synthetic-s{seed}"
    cfg.train.steps = steps
    cfg.rollout.max_tool_calls = max_tool_calls
    save_config(cfg, path / "config.yaml")
    rng = np.random.default_rng(seed)
    tools = max_tool_calls > 0
    with open(path / "metrics.jsonl", "w") as f:
        if base_row:  # the base model's eval before RL, as `zerotir demo` writes it
            f.write(json.dumps({"step": 0, "policy_version": 0, "eval/accuracy": 0.02, "eval/code_ratio": 0.05}) + "\n")
        for s in range(1, steps + 1):
            acc = (0.85 - 0.8 * s ** -0.7) if tools else 0.05
            code = (1.0 - 0.95 * s ** -1.2) if tools else 0.0
            row = {"step": s,
                   "reward/accuracy": float(np.clip(acc + rng.normal(0, 0.03), 0, 1)),
                   "rollout/code_ratio": float(np.clip(code + rng.normal(0, 0.02), 0, 1)),
                   "rollout/response_tokens": 50 + (8 * np.log(s) if tools else 0) + rng.normal(0, 1.0),
                   "loss/entropy": 1.5 * s ** -0.2 + rng.normal(0, 0.01)}
            if s % eval_every == 0:
                row["eval/accuracy"] = float(np.clip(acc + rng.normal(0, 0.02), 0, 1))
                row["eval/code_ratio"] = float(np.clip(code + rng.normal(0, 0.02), 0, 1))
            f.write(json.dumps(row) + "\n")
        if partial_last_line:
            f.write('{"step": %d, "reward/accu' % (steps + 1))
    return path
