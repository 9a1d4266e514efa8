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
import time
from pathlib import Path
from typing import Callable

from zerotir.algos.filters import check_filter_config, filter_trajectories, needs_refill
from zerotir.config import Config, save_config
from zerotir.metrics import step_row
from zerotir.records import FilterResult, RolloutResult, rollout_seed
from zerotir.telemetry import MetricsWriter, get_logger, make_run_dir, read_metrics, setup_logging
from zerotir.train.backend import Backend, LocalBackend
from zerotir.train.checkpoint import CKPT_SUBDIR, checkpoint_name
from zerotir.train.compute import ComputeTotals, cpu_seconds, rollout_flops
from zerotir.train.phases import eval_set_name, eval_sets, seed_everything
from zerotir.train.pipeline import Handle, RolloutPipeline
from zerotir.train.sinks import Sinks, write_transcripts
from zerotir.train.stats import PromptSampler

log = get_logger("train")

MAX_REFILLS = 3
"""Dynamic sampling rolls out more prompts at most this many times per step."""


def validate_inputs(cfg: Config):
    """Everything that can be wrong with the inputs, checked before any work: data files and rows, the model dir
    (config, tokenizer, weights), and settings that cannot work together. Raises one clear error.

    Returns (training problems, held-out sets): the sets map a metric prefix to problems, 'eval/' for data.eval
    and 'eval/<name>/' for each data.eval_extra set ({} when data.eval is empty)."""
    from zerotir.data import DataError, load_problems
    from zerotir.models import check_model_dir

    kw = dict(problem_field=cfg.data.problem_field, answer_field=cfg.data.answer_field, strict=True,
              seed=cfg.train.seed)
    train_set = load_problems(cfg.data.train, **kw).problems
    eval_set = load_problems(cfg.data.eval, limit=cfg.data.eval_limit, **kw).problems if cfg.data.eval else []
    extra = {f"eval/{eval_set_name(src)}/": load_problems(src, limit=cfg.data.eval_limit, **kw).problems
             for src in cfg.data.eval_extra}
    if len(extra) != len(cfg.data.eval_extra) or "eval/eval/" in extra:
        raise ValueError(f"data.eval_extra: two sets share a name (or one is named 'eval'): {cfg.data.eval_extra}")
    if extra and not eval_set:
        raise ValueError("data.eval_extra needs data.eval: the extra sets are evaluated alongside it")
    if not train_set:
        raise DataError(f"{cfg.data.train}: no training problems")
    from zerotir.algos.advantages import check_algo_config
    from zerotir.algos.losses import check_objective_config
    from zerotir.models import load_tokenizer
    from zerotir.rollout.tir import check_budgets

    check_budgets(cfg.rollout, load_tokenizer(check_model_dir(cfg.model.path)), cfg.rollout.max_tool_calls)
    check_algo_config(cfg.algo)
    check_filter_config(cfg.algo)
    check_objective_config(cfg.algo)
    t = cfg.train
    if t.prompts_per_step < 1 or cfg.rollout.n_samples < 1 or t.ppo_epochs < 1 or t.minibatches < 1:
        raise ValueError("train.prompts_per_step, rollout.n_samples, train.ppo_epochs and train.minibatches must be >= 1")
    if cfg.rollout.engine != "hf" and cfg.train.backend != "ray":
        raise ValueError(f"rollout.engine '{cfg.rollout.engine}' runs under train.backend=ray; the local backend uses "
                         "'hf'")
    return train_set, ({"eval/": eval_set, **extra} if eval_set else {})


def resolve_run_dir(cfg: Config, resume: str | bool, run_dir: str | None) -> tuple[Path | None, Path | None]:
    """(run directory, checkpoint to resume from or None). Checks only: nothing is created here, so a run that fails
    to start leaves no debris; a fresh run's directory is None (made by `create_run_dir` once the backend is up)."""
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
    return None, None


def create_run_dir(cfg: Config, run_dir: str | None) -> Path:
    """A fresh run directory (`run_dir`, or train.run_dir's template) holding the resolved config."""
    if run_dir:
        p = Path(run_dir)
        p.mkdir(parents=True, exist_ok=True)
        save_config(cfg, p / "config.yaml")
        return p
    return make_run_dir(cfg.train.run_dir, cfg.train.name, cfg)


class RunHealthError(RuntimeError):
    """The run stopped itself: its rollouts were failing for reasons that are not the policy's."""


class RunHealth:
    """Watches each step for infrastructure trouble: a share of sandbox failures above
    train.max_sandbox_error_share, or dynamic sampling short of groups after its refills. Each bad step logs a
    warning; `check` returns a message (the run should stop) after train.max_bad_steps consecutive bad steps."""

    def __init__(self, cfg: Config):
        self.cfg, self.bad_steps = cfg, 0
        sb = cfg.sandbox
        self.sandbox_name = f"sandbox service {sb.url}" if sb.backend == "remote" else f"local sandbox ({sb.isolation})"

    def check(self, step: int, rollout: RolloutResult, filtered: FilterResult) -> str | None:
        t = self.cfg.train
        n = len(rollout.trajectories)
        errors = sum(x.sandbox_error for x in rollout.trajectories)
        bad = []
        if n and errors / n > t.max_sandbox_error_share:
            bad.append(f"{errors} of {n} trajectories hit a {self.sandbox_name} failure and were dropped")
        if self.cfg.algo.dynamic_sampling and filtered.groups < t.prompts_per_step:
            bad.append(f"dynamic sampling kept {filtered.groups} of {t.prompts_per_step} groups after {MAX_REFILLS} "
                       "refills (training on fewer)")
        for msg in bad:
            log.warning("step %d: %s", step, msg)
        self.bad_steps = self.bad_steps + 1 if bad else 0
        if bad and t.max_bad_steps and self.bad_steps >= t.max_bad_steps:
            return (f"stopped after {self.bad_steps} consecutive bad steps (train.max_bad_steps): " + "; ".join(bad)
                    + ". A checkpoint of the last good step was saved; fix the cause and --resume.")
        return None


class StepPrompts:
    """Each step's prompts, taken from the sampler in step order when the step is first launched (so sync and async
    runs see the same prompts), kept for a step re-launched because its batch was too stale; remembers the data
    cursor before each step's prompts, which is what a checkpoint must store when later steps were launched ahead."""

    def __init__(self, backend: Backend, sampler: PromptSampler, per_step: int, seed: int):
        self.backend, self.sampler, self.per_step, self.seed = backend, sampler, per_step, seed
        self.problems: dict[int, list] = {}
        self.cursors: dict[int, dict[str, int]] = {}

    def launch(self, step: int) -> Handle:
        """Roll out step `step`'s prompts (the pipeline calls this, possibly ahead of the learner)."""
        if step not in self.problems:
            self.cursors[step] = dict(self.sampler.cursor)
            self.problems[step] = self.sampler.take(self.per_step)
        return self.backend.launch(step, self.problems[step], 0, rollout_seed(self.seed, step))

    def resume_cursor(self, step: int) -> dict[str, int]:
        """The cursor a checkpoint after `step` stores: before any prompts of steps launched ahead."""
        self.problems.pop(step, None)
        return self.cursors.pop(step + 1, None) or dict(self.sampler.cursor)


def train(cfg: Config, resume: str | bool = False, run_dir: str | None = None,
          backend_factory: Callable[[Config], Backend] | None = None) -> Path:
    """Run RL training per `cfg`; returns the run directory (config.yaml, metrics.jsonl, transcripts/, checkpoints/).
    backend_factory: where the phases run (default `LocalBackend`; `zerotir.distributed.ray_backend()` for Ray)."""
    setup_logging(cfg.logging.level)
    train_set, heldout = validate_inputs(cfg)                       # bad inputs fail here, before any work
    #                                                  heldout: metric prefix → problems (data.eval, eval_extra)
    run, ckpt = resolve_run_dir(cfg, resume, run_dir)               # checks only; nothing is written yet
    seed_everything(cfg.train.seed)
    t, a = cfg.train, cfg.algo
    backend = (backend_factory or LocalBackend)(cfg)                 # sandbox first: a missing layer fails here
    try:
        run = run or create_run_dir(cfg, run_dir)
        sampler = PromptSampler(train_set, seed=t.seed, shuffle=cfg.data.shuffle)
        start, totals = 0, ComputeTotals()
        if ckpt is not None:
            state = backend.load(ckpt)
            sampler.restore(state["data_cursor"])
            start, totals = int(state["step"]), ComputeTotals.from_state(state.get("compute"))
            log.info("resumed from %s (step %d)", ckpt, start)
        _truncate_metrics(run / "metrics.jsonl", start if ckpt is not None else -1)   # rows a killed run wrote
        #                                                  past its checkpoint (all of them when it starts over)
        backend.sync_weights(start)                                  # engines start from the learner's exact weights
        prompts = StepPrompts(backend, sampler, t.prompts_per_step, t.seed)
        health = RunHealth(cfg)
        pipe = RolloutPipeline(prompts.launch, max_staleness=t.max_staleness, async_mode=t.async_rollout)
        pipe.start(start + 1)
        writer = MetricsWriter(run)
        log.info("run dir %s: %d training problems, %d held-out; steps %d..%d", run, len(train_set),
                 len(heldout.get("eval/", [])), start + 1, t.steps)
        with Sinks(run, cfg.logging, _cfg_dict(cfg), progress=backend.progress) as sinks:
            if start == 0 and heldout and t.eval_at_start:             # the base model: the curves' step 0
                base = eval_sets(backend.evaluate, heldout, 0)
                row = {"step": 0, "epoch": 0, "policy_version": 0, **base.metrics,
                       "perf/eval_seconds": base.seconds, **totals.row(backend.shape.params)}
                writer.write(row)
                sinks.write(row)
            for step in range(start + 1, t.steps + 1):
                t0, cpu0 = time.perf_counter(), cpu_seconds()
                # ---- rollout + reward (launched ahead in async mode) → filter
                rollout = pipe.get(step, version=step - 1, last_step=t.steps)
                filtered = filter_trajectories(rollout.trajectories, a, group_size=cfg.rollout.n_samples)
                # ---- dynamic sampling: refill from the next prompts until enough groups survive
                for refill in range(1, MAX_REFILLS + 1 if a.dynamic_sampling else 1):
                    if not (short := needs_refill(filtered.kept, t.prompts_per_step)):
                        break
                    more = backend.launch(step, sampler.take(short), refill * t.prompts_per_step,
                                          rollout_seed(t.seed, step, refill)).result()
                    rollout = RolloutResult.concat([rollout, more])
                    filtered = FilterResult.concat([filtered, filter_trajectories(more.trajectories, a,
                                                                                  group_size=cfg.rollout.n_samples)])
                # ---- loud infrastructure failures: warn each bad step, stop (with a checkpoint) after several
                if problems := health.check(step, rollout, filtered):
                    if not (run / CKPT_SUBDIR / checkpoint_name(step - 1)).exists():   # the last good step's weights
                        backend.save(run, step - 1, {"data_cursor": prompts.resume_cursor(step - 1),
                                                     "compute": totals.state()}, keep=t.keep_checkpoints)
                    raise RunHealthError(problems)
                # ---- update (collate → advantages → optimizer steps) → weight sync
                t_up = time.perf_counter()
                update = backend.update(filtered.kept, step)
                t_up = time.perf_counter() - t_up
                backend.sync_weights(step, wait=not t.async_rollout)
                totals = totals.add(rollout_flops(backend.shape, rollout.trajectories) + update.flops,
                                    rollout.sampled_tokens + update.trained_tokens, time.perf_counter() - t0,
                                    cpu_seconds() - cpu0)
                # ---- periodic eval, one metrics row, transcripts, checkpoint
                is_last = step == t.steps
                evaluation = None
                if heldout and ((t.eval_every and step % t.eval_every == 0) or is_last):
                    evaluation = eval_sets(backend.evaluate, heldout, step)
                row = step_row(step, sampler.epoch, rollout, filtered, update, evaluation, update_seconds=t_up,
                               step_seconds=time.perf_counter() - t0, compute=totals.row(backend.shape.params))
                writer.write(row)
                sinks.write(row)
                if t.transcripts_every and (step % t.transcripts_every == 0 or step == 1):
                    write_transcripts(run, step, list(rollout.trajectories))
                cursor = prompts.resume_cursor(step)
                if (t.save_every and step % t.save_every == 0) or is_last:
                    backend.save(run, step, {"data_cursor": cursor, "compute": totals.state()},
                                 keep=t.keep_checkpoints)
        pipe.drain()
        if pipe.dropped_batches:
            log.warning("%d rollout batches were older than train.max_staleness and were regenerated",
                        pipe.dropped_batches)
    finally:
        backend.close()
    return run


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
