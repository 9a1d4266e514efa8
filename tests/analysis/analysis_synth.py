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


TRUE_CROSS = {"A_inf": 0.9, "k": 0.23, "alpha": 0.35, "c": 7.5e11, "gamma": 0.9, "B": 1.5}
"""Known cross-size law of the synthetic study: A(N) = A_inf − k·(N/1e6)^−alpha, C_mid(N) = c·(N/1e6)^gamma,
shared B (N0 = 1e6 is the pivot `sizes.fit_cross` picks for sizes around a million)."""
FLOPS_PER_STEP_PER_PARAM = 4e4
"""Synthetic compute: each step costs 4e4·N FLOPs (≈ 6·N per token × 6400 tokens), jittered per seed."""


def true_sigmoid(n: float, r0: float = 0.05) -> dict[str, float]:
    t = TRUE_CROSS
    u = n / 1e6
    return {"R0": r0, "A": t["A_inf"] - t["k"] * u ** -t["alpha"], "C_mid": t["c"] * u ** t["gamma"], "B": t["B"]}


def ar1(rng: np.random.Generator, n: int, sd: float, rho: float = 0.7) -> np.ndarray:
    """Stationary AR(1) noise: e_t = rho·e_{t−1} + sqrt(1 − rho²)·sd·z_t (correlated along a run)."""
    e = np.empty(n)
    e[0] = rng.normal(0, sd)
    for i in range(1, n):
        e[i] = rho * e[i - 1] + np.sqrt(1 - rho ** 2) * rng.normal(0, sd)
    return e


def sigmoid_runs(truth: dict[str, float], rng: np.random.Generator, n_runs: int = 6, sd: float = 0.015,
                 npts: int = 40, span: float = 8.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeds of one config as (compute [npts+1], value) arrays: AR(1) noise along each run (correlated residuals), a
    per-seed ceiling offset (sd/2) and compute jitter (2%); point 0 is the base eval at compute 0."""
    from zerotir.analysis.sigmoid import predict

    out = []
    for _ in range(n_runs):
        p = dict(truth)
        p["A"] += rng.normal(0, sd / 2)
        c = np.linspace(0, span * truth["C_mid"], npts + 1) * (1 + 0.02 * rng.normal())
        y = predict(p, c) + ar1(rng, len(c), sd)
        y[0] = truth["R0"] + rng.normal(0, sd / 3)
        out.append((c, y))
    return out


def write_study_run(path: Path, seed: int, n_params: float, steps: int = 60, eval_every: int = 3,
                    sd: float = 0.015, model_path: str | None = None, max_tool_calls: int = 2,
                    truth: dict[str, float] | None = None) -> Path:
    """A run dir as `zerotir study` cells write them: cumulative compute/* and model/params on every row, eval/*
    on eval steps (step 0 = the base model, compute 0). Eval accuracy follows `truth` (default: the size's point
    of TRUE_CROSS) plus AR(1) noise and a per-seed offset of the ceiling; code ratio and length follow scaled
    copies of the same sigmoid."""
    from zerotir.analysis.sigmoid import predict

    path.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.train.seed = seed
    cfg.train.steps = steps
    cfg.train.name = path.name
    cfg.rollout.max_tool_calls = max_tool_calls
    cfg.model.path = model_path or f"toy-{int(n_params)}"
    save_config(cfg, path / "config.yaml")
    rng = np.random.default_rng(10_000 + seed * 7 + int(n_params) % 997)
    p = dict(truth or true_sigmoid(n_params))
    p["A"] += rng.normal(0, sd / 2)  # seeds differ in their ceiling too: the seed bootstrap must see it
    per_step = FLOPS_PER_STEP_PER_PARAM * n_params * (1 + rng.normal(0, 0.02))
    evals = list(range(0, steps + 1, eval_every))
    noise = {m: ar1(rng, len(evals), sd) for m in ("acc", "code", "len")}
    with open(path / "metrics.jsonl", "w") as f:
        for s in range(0, steps + 1):
            c = per_step * s
            row = {"step": s, "compute/flops": c, "compute/tokens": 6400.0 * s, "compute/seconds": 0.5 * s,
                   "compute/cpu_seconds": 1.0 * s, "model/params": float(n_params)}
            if s > 0:
                row["reward/accuracy"] = float(predict(p, [c])[0] + rng.normal(0, 0.05))
            if s in evals:
                i = evals.index(s)
                acc = float(predict(p, [c])[0])
                row["eval/accuracy"] = acc + (noise["acc"][i] if s else 0.0)
                row["eval/code_ratio"] = float(np.clip(0.1 + (acc - 0.05) + noise["code"][i], 0, 1))
                row["eval/response_tokens"] = 80 + 100 * (acc - 0.05) + 30 * noise["len"][i]
            f.write(json.dumps(row) + "\n")
    return path
