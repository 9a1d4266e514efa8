"""The RL driver: one readable loop, one line per phase, no callbacks.

    sample prompts → rollout (engine + sandbox) → reward → filter → collate → advantages → PPO epochs/minibatches
    → engine weight sync → periodic eval → metrics.jsonl row → transcripts → checkpoint

`train(cfg)` returns the run directory. `train(cfg, resume=True, run_dir=DIR)` (or `resume=DIR`) continues from
DIR's newest checkpoint; the next step is identical to the one an uninterrupted run with the same seed would take:
the prompt order is a pure function of (seed, epoch), every rollout call gets a seed derived from (seed, step), and
the checkpoint restores weights, optimizer, scheduler and RNG states.
"""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path

import numpy as np
import torch

from zerotir.config import Config, save_config
from zerotir.telemetry import METRICS, MetricsWriter, get_logger, make_run_dir, read_metrics, setup_logging
from zerotir.train.sinks import Sinks, write_transcripts
from zerotir.train.update import update_phase
from zerotir.train.stats import PromptSampler, mean_stats, reward_metrics, rollout_metrics, staleness

log = get_logger("train")

LOSS_KEYS = [k for k in METRICS if k.startswith(("loss/", "optim/"))]


def validate_inputs(cfg: Config):
    """Everything that can be wrong with the inputs, checked before any work: data files and rows, the model dir
    (config, tokenizer, weights), and settings that cannot work together. Raises one clear error."""
    from zerotir.data import DataError, load_problems
    from zerotir.models import check_model_dir

    kw = dict(problem_field=cfg.data.problem_field, answer_field=cfg.data.answer_field, strict=True,
              seed=cfg.train.seed)
    train_set = load_problems(cfg.data.train, **kw).problems
    eval_set = load_problems(cfg.data.eval, limit=cfg.data.eval_limit, **kw).problems if cfg.data.eval else []
    if not train_set:
        raise DataError(f"{cfg.data.train}: no training problems")
    from zerotir.algos.advantages import check_algo_config
    from zerotir.models import load_tokenizer
    from zerotir.rollout.tir import check_budgets

    check_budgets(cfg.rollout, load_tokenizer(check_model_dir(cfg.model.path)), cfg.rollout.max_tool_calls)
    check_algo_config(cfg.algo)
    t = cfg.train
    if t.prompts_per_step < 1 or cfg.rollout.n_samples < 1 or t.ppo_epochs < 1 or t.minibatches < 1:
        raise ValueError("train.prompts_per_step, rollout.n_samples, train.ppo_epochs and train.minibatches must be >= 1")
    if cfg.rollout.engine != "hf":
        raise ValueError(f"rollout.engine '{cfg.rollout.engine}' runs under train.backend=ray; the local loop uses 'hf'")
    return train_set, eval_set


def resolve_run_dir(cfg: Config, resume: str | bool, run_dir: str | None) -> tuple[Path, Path | None]:
    """(run directory, checkpoint to resume from or None)."""
    from zerotir.train.checkpoint import CKPT_SUBDIR, latest_checkpoint

    if resume:
        target = Path(resume) if isinstance(resume, str) else (Path(run_dir) if run_dir else None)
        if target is None:  # newest run dir of this name that holds a checkpoint
            pattern = Path(cfg.train.run_dir.format(name=cfg.train.name, time="*"))
            cands = sorted((p for p in pattern.parent.glob(pattern.name) if latest_checkpoint(p)),
                           key=lambda p: latest_checkpoint(p).stat().st_mtime)
            if not cands:
                raise FileNotFoundError(f"--resume: no run with a checkpoint matches {pattern}")
            target = cands[-1]
        if target.parent.name == CKPT_SUBDIR:  # a checkpoint dir was given
            return target.parent.parent, target
        if not target.is_dir():
            raise FileNotFoundError(f"--resume: run directory not found: {target}")
        return target, latest_checkpoint(target)
    if run_dir:
        p = Path(run_dir)
        if p.exists() and any(p.iterdir()):
            raise FileExistsError(f"run directory {p} is not empty (use --resume to continue it)")
        p.mkdir(parents=True, exist_ok=True)
        save_config(cfg, p / "config.yaml")
        return p, None
    return make_run_dir(cfg.train.run_dir, cfg.train.name, cfg), None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_engine(learner, cfg: Config, version: int):
    """The generation engine: its own copy of the policy weights (the learner's model is training)."""
    from zerotir.models import load_model_and_tokenizer
    from zerotir.rollout.hf_engine import HFEngine

    model, tok = load_model_and_tokenizer(cfg.model.path, str(learner.device), cfg.model.dtype)
    engine = HFEngine(model, tok, max_batch=cfg.rollout.batch_size, device=str(learner.device), seed=cfg.train.seed)
    engine.update_weights(learner.policy_state_dict(), version)
    return engine


def generate(problems, engine, sandbox, scorer, cfg: Config, version: int, group_offset: int, seed: int):
    """Rollout + reward for one set of prompts. Returns (scored trajectories, scorer metrics, rollout s, reward s)."""
    from zerotir.rollout.tir import rollout

    t0 = time.perf_counter()
    trajs = rollout(problems, engine, sandbox, cfg.rollout, n_samples=cfg.rollout.n_samples,
                    max_tool_calls=cfg.rollout.max_tool_calls, policy_version=version, group_offset=group_offset,
                    seed=seed)
    t1 = time.perf_counter()
    scored = scorer.score(trajs, cfg.rollout.max_total_tokens) or {}
    return trajs, dict(scored), t1 - t0, time.perf_counter() - t1


def periodic_eval(eval_set, engine, sandbox, scorer, cfg: Config, step: int) -> dict[str, float]:
    """Held-out eval through THE eval function (`zerotir eval` calls the same)."""
    from zerotir.eval.core import eval_rollout_config, evaluate

    t0 = time.perf_counter()
    report = evaluate(eval_set, engine, sandbox, scorer, rollout_cfg=eval_rollout_config(cfg.rollout, cfg.eval),
                      samples=cfg.eval.samples, max_tool_calls=cfg.eval.max_tool_calls, seed=cfg.train.seed + step)
    return {**report.metric_row("eval/"), "perf/eval_seconds": time.perf_counter() - t0}


def train(cfg: Config, resume: str | bool = False, run_dir: str | None = None) -> Path:
    """Run RL training per `cfg`; returns the run directory (config.yaml, metrics.jsonl, transcripts/, checkpoints/)."""
    setup_logging(cfg.logging.level)
    train_set, eval_set = validate_inputs(cfg)                       # bad inputs fail here, before any work
    from zerotir.algos.filters import filter_trajectories
    from zerotir.reward import RewardScorer
    from zerotir.sandbox import make_sandbox
    from zerotir.train.checkpoint import load_checkpoint, save_checkpoint
    from zerotir.train.learner import Learner

    run, ckpt = resolve_run_dir(cfg, resume, run_dir)
    seed_everything(cfg.train.seed)
    t, a = cfg.train, cfg.algo
    learner = Learner(cfg)
    sampler = PromptSampler(train_set, seed=t.seed, shuffle=cfg.data.shuffle)
    start = 0
    if ckpt is not None:
        state = load_checkpoint(ckpt, learner)
        sampler.restore(state["data_cursor"])
        start = int(state["step"])
        log.info("resumed from %s (step %d)", ckpt, start)
    _truncate_metrics(run / "metrics.jsonl", start)                  # rows a killed run wrote past its checkpoint
    writer = MetricsWriter(run)
    engine = make_engine(learner, cfg, version=start)
    log.info("run dir %s: %d training problems, %d held-out; steps %d..%d", run, len(train_set), len(eval_set),
             start + 1, t.steps)

    with make_sandbox(cfg.sandbox) as sandbox, RewardScorer(cfg.reward) as scorer, \
            Sinks(run, cfg.logging, _cfg_dict(cfg)) as sinks:
        for step in range(start + 1, t.steps + 1):
            t0 = time.perf_counter()
            # ---- sample prompts → rollout → reward → filter (dynamic sampling refills from the next prompts)
            problems = sampler.take(t.prompts_per_step)
            trajs, scored, t_roll, t_rew = generate(problems, engine, sandbox, scorer, cfg, step - 1, 0,
                                                    seed=t.seed * 1_000_003 + step * 101)
            kept, fstats = filter_trajectories(trajs, a)
            trajs, kept, fstats, r2, w2 = refill_groups(
                trajs, kept, fstats, cfg, step, sampler,
                lambda probs, off, seed: generate(probs, engine, sandbox, scorer, cfg, step - 1, off, seed))
            t_roll, t_rew = t_roll + r2, t_rew + w2
            # ---- collate → reference log-probs / critic values → advantages → PPO epochs x minibatches
            t_up = time.perf_counter()
            update_stats = update_phase(learner, kept, cfg, step)
            t_up = time.perf_counter() - t_up
            # ---- engine weight sync, periodic eval
            engine.update_weights(learner.policy_state_dict(), step)
            is_last = step == t.steps
            ev = {}
            if eval_set and ((t.eval_every and step % t.eval_every == 0) or is_last):
                ev = periodic_eval(eval_set, engine, sandbox, scorer, cfg, step)
            # ---- log one row with every name, transcripts, checkpoint
            row = step_row(step, sampler.epoch, trajs, kept, scored, fstats, update_stats, ev,
                           {"perf/rollout_seconds": t_roll, "perf/reward_seconds": t_rew, "perf/update_seconds": t_up},
                           t0)
            writer.write(row)
            sinks.write(row)
            if t.transcripts_every and (step % t.transcripts_every == 0 or step == 1):
                write_transcripts(run, step, trajs)
            if (t.save_every and step % t.save_every == 0) or is_last:
                save_checkpoint(run, step, learner, {"data_cursor": sampler.cursor}, keep=t.keep_checkpoints)
    return run


def refill_groups(trajs, kept, fstats: dict, cfg: Config, step: int, sampler, launch):
    """Dynamic sampling: while fewer than prompts_per_step groups survived the filter, roll out that many more
    prompts (at most 3 times). launch(problems, group_offset, seed) -> (scored trajectories, metrics, rollout s,
    reward s), the shape of `generate`. Returns (all trajectories, kept, filter stats, extra rollout s, extra reward s).
    """
    from zerotir.algos.filters import filter_trajectories, needs_refill

    t, a = cfg.train, cfg.algo
    roll_s = rew_s = 0.0
    for refill in range(1, 4 if a.dynamic_sampling else 1):
        if not (short := needs_refill(kept, t.prompts_per_step)):
            break
        seed = t.seed * 1_000_003 + step * 101 + refill
        more, _, r, w = launch(sampler.take(short), refill * t.prompts_per_step, seed)
        k2, f2 = filter_trajectories(more, a)
        trajs, kept, roll_s, rew_s = trajs + more, kept + k2, roll_s + r, rew_s + w
        fstats = {k: fstats.get(k, 0) + v for k, v in f2.items()}
    return trajs, kept, fstats, roll_s, rew_s


def step_row(step: int, epoch: int, trajs, kept, scored: dict, fstats: dict, update_stats: list[dict], ev: dict,
             perf: dict[str, float], t0: float) -> dict[str, float]:
    """One metrics row with every name: rollout/reward/scorer/staleness/loss/filter metrics, perf timings
    (perf holds perf/rollout_seconds, perf/reward_seconds, perf/update_seconds), eval, step seconds since t0."""
    sampled = sum(x.num_sampled_tokens for x in trajs)
    return {"step": step, "epoch": epoch, "policy_version": step,
            **rollout_metrics(trajs), **reward_metrics(trajs), **_known(scored), **staleness(kept, step - 1),
            **{k: 0.0 for k in LOSS_KEYS}, **mean_stats(update_stats), **_filter_row(fstats, len(kept)), **perf,
            "perf/tokens_per_second": sampled / max(perf["perf/rollout_seconds"], 1e-9), **ev,
            "perf/step_seconds": time.perf_counter() - t0}


def _filter_row(fstats: dict, kept: int) -> dict[str, float]:
    row = {"filter/kept": float(kept), "filter/dropped_uniform_groups": 0.0, "filter/dropped_sandbox_errors": 0.0,
           "filter/dropped_overlong": 0.0}
    row.update({k: float(v) for k, v in fstats.items() if k in row and k != "filter/kept"})
    return row


def _known(metrics: dict) -> dict[str, float]:
    """The scorer's metrics that are in the vocabulary (others are dropped rather than failing the run)."""
    return {k: float(v) for k, v in metrics.items() if k in METRICS}


def _cfg_dict(cfg: Config) -> dict:
    from zerotir.config import config_to_dict

    return config_to_dict(copy.deepcopy(cfg))


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only rows with step <= last_step (a resumed run rewrites the steps after its checkpoint)."""
    if not path.exists():
        return
    import json

    rows = [r for r in read_metrics(path) if int(r.get("step", 0)) <= last_step]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
