"""The phases one backend process runs, shared by the local backend and the Ray rollout workers: rollout + reward
of a set of prompts (`generate`) and the held-out eval (`heldout_eval`). Each returns a step record. The loop's
periodic eval over several sets (`eval_sets`) combines them through any backend's `evaluate`."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from zerotir.config import Config
from zerotir.records import EvalResult, RolloutResult
from zerotir.types import Problem


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def generate(problems: Sequence[Problem], engine: Any, sandbox: Any, scorer: Any, cfg: Config, *, version: int,
             group_offset: int, seed: int, step: int, progress: Any = None) -> RolloutResult:
    """Rollout (engine + sandbox) and reward of `problems`; group ids start at `group_offset`. Each prompt gets
    `algos.filters.samples_per_prompt(cfg)` responses (rollout.n_samples, oversampled for the 'roc' filter).
    `progress` counts finished trajectories for the live view (`zerotir.rollout.tir.arollout_tree`)."""
    from zerotir.algos.filters import samples_per_prompt
    from zerotir.rollout.tir import rollout

    t0 = time.perf_counter()
    trajs = rollout(list(problems), engine, sandbox, cfg.rollout, n_samples=samples_per_prompt(cfg),
                    max_tool_calls=cfg.rollout.max_tool_calls, policy_version=version, group_offset=group_offset,
                    seed=seed, progress=progress)
    t1 = time.perf_counter()
    summary = scorer.score(trajs, cfg.rollout.max_total_tokens)
    return RolloutResult(tuple(trajs), rollout_seconds=t1 - t0, reward_seconds=time.perf_counter() - t1,
                         verify_timeouts=summary.verify_timeouts, step=step)


def heldout_eval(eval_set: Sequence[Problem], engine: Any, sandbox: Any, scorer: Any, cfg: Config,
                 step: int) -> EvalResult:
    """Held-out eval through THE eval function (`zerotir eval` calls the same)."""
    from zerotir.eval.core import eval_rollout_config, evaluate

    t0 = time.perf_counter()
    report = evaluate(eval_set, engine, sandbox, scorer, rollout_cfg=eval_rollout_config(cfg.rollout, cfg.eval),
                      samples=cfg.eval.samples, max_tool_calls=cfg.eval.max_tool_calls, seed=cfg.train.seed + step)
    return EvalResult(metrics=report.metric_row("eval/"), seconds=time.perf_counter() - t0)


def eval_set_name(spec: str) -> str:
    """How an extra held-out set (data.eval_extra) is named in metric names: 'toy:ood-wording' → 'ood-wording',
    'data/aime.jsonl' → 'aime'. A metric name eval/<name>/<metric> has exactly three parts, so no '/' survives."""
    name = Path(spec).stem if spec.endswith(".jsonl") else spec.rsplit(":", 1)[-1]
    return name.replace("/", "_")


def eval_sets(evaluate: Callable[[Sequence[Problem], int], EvalResult], sets: dict[str, Sequence[Problem]],
              step: int) -> EvalResult:
    """One periodic eval over several sets: `sets` maps a metric prefix ('eval/' for data.eval, 'eval/<name>/' for
    each extra set) to its problems; `evaluate` is the backend's. Metrics are renamed under each prefix; the wall
    time is the sum."""
    metrics: dict[str, float] = {}
    seconds = 0.0
    for prefix, problems in sets.items():
        res = evaluate(problems, step)
        metrics.update({prefix + k.removeprefix("eval/"): v for k, v in res.metrics.items()})
        seconds += res.seconds
    return EvalResult(metrics=metrics, seconds=seconds)
