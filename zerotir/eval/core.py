"""`evaluate`: THE eval function. `zerotir eval` and the training loop's periodic eval both call it, so held-out
numbers during training and benchmark numbers afterwards come from the same rollout, sandbox and reward code.

    report = evaluate(problems, engine, sandbox, scorer, rollout_cfg=cfg.rollout, samples=4, max_tool_calls=2)
    report.metrics["accuracy"], report.metrics["code_ratio"], report.pass_at[4]
    writer.write({"step": step, **report.metric_row("eval/")})          # eval/accuracy, eval/code_ratio, ...

Problems are rolled out in chunks of whole problems (all `samples` of a problem in one chunk, about
`rollout_cfg.batch_size` trajectories per chunk); each chunk is scored right away and handed to `on_chunk`, which is
how `zerotir eval` persists samples for resuming. Trajectories passed in `done` are reused, not re-generated: a
problem whose sample indices 0..samples-1 are all in `done` is skipped. Chunk seeds depend only on `seed` and the
chunk's position in `problems`, so a resumed run draws the same seeds for the chunks it still has to do, and a
tool-budget sweep samples every budget with the same seeds (responses agree until the budgets first differ).

`summarize(problems, trajectories, samples)` turns scored trajectories into the report (pure; no model needed).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from zerotir.eval import metrics as M
from zerotir.metrics import prefixed, trajectory_metrics
from zerotir.records import rollout_seed
from zerotir.telemetry import EVAL_METRICS, get_logger
from zerotir.sandbox.protocol import SandboxLike
from zerotir.types import Problem, Trajectory

log = get_logger("eval")

TOOL_METRICS: tuple[str, ...] = tuple(k for k in EVAL_METRICS if k not in ("accuracy", "pass@k", "maj@k"))
"""The eval's trajectory figures, computed by zerotir.metrics.trajectory_metrics (the training rows' function)."""


@dataclass
class ProblemRecord:
    """Per-problem outcome over its samples."""

    problem_id: str
    gold: str
    n: int
    """Samples drawn."""
    n_correct: int
    answers: list[str | None]
    """Extracted answers in sample order (None = no answer)."""
    majority_answer: str | None
    """Normalised majority-vote answer (see metrics.normalize_answer)."""
    majority_correct: bool
    n_with_code: int
    """Samples with at least one executed tool call."""


@dataclass
class EvalReport:
    """What `evaluate` returns. `metrics` uses the telemetry.EVAL_METRICS names; 'pass@k' and 'maj@k' there are
    at k = samples, and `pass_at` holds pass@k for every k in metrics.default_ks(samples)."""

    metrics: dict[str, float]
    pass_at: dict[int, float]
    records: list[ProblemRecord]
    trajectories: list[Trajectory] = field(default_factory=list)
    samples: int = 0
    seconds: float = 0.0
    """Wall time spent generating + scoring in this call (reused samples cost nothing)."""
    extra: dict[str, float] = field(default_factory=dict)
    """Counts outside the metric vocabulary: problems, trajectories, sandbox_errors, answer_rate, reused."""
    failures: dict[str, float] = field(default_factory=dict)
    """Share of responses per metrics.FAILURE_KINDS entry (why answers were wrong); sums to 1."""

    def metric_row(self, prefix: str = "eval/") -> dict[str, float]:
        """Metrics as a metrics.jsonl row: prefix 'eval/' → eval/accuracy, ...; 'eval/math500/' → per benchmark,
        including every eval/<bench>/pass@<k>. (Names the vocabulary lacks are left out for the plain 'eval/'.)"""
        from zerotir.telemetry import is_known_metric

        row = {f"{prefix}{k}": v for k, v in self.metrics.items() if k not in ("pass@k", "maj@k")}
        row[f"{prefix}pass@{self.samples}"] = self.metrics["pass@k"]
        row[f"{prefix}maj@{self.samples}"] = self.metrics["maj@k"]
        row.update({f"{prefix}pass@{k}": v for k, v in self.pass_at.items()})
        return {k: v for k, v in row.items() if is_known_metric(k)}


def summarize(problems: Sequence[Problem], trajectories: Sequence[Trajectory], samples: int) -> EvalReport:
    """Build the report from scored trajectories (reward/correct/answer filled in). Pure function.

    Every problem must have exactly `samples` trajectories (matched by problem_id); a shortfall is an error naming
    the problem, so a partly generated eval can never be reported as if complete."""
    by_pid: dict[str, list[Trajectory]] = {p.id: [] for p in problems}
    for t in trajectories:
        if t.problem_id in by_pid:
            by_pid[t.problem_id].append(t)
    records = []
    for p in problems:
        ts = sorted(by_pid[p.id], key=lambda t: t.sample_index)
        if len(ts) != samples:
            raise ValueError(f"problem '{p.id}': {len(ts)} scored samples, expected {samples}")
        answers = [t.answer for t in ts]
        correct = [bool(t.correct) for t in ts]
        maj, maj_ok = M.majority_vote(answers, correct)
        records.append(ProblemRecord(p.id, p.answer, len(ts), sum(correct), answers, maj, maj_ok,
                                     sum(t.num_tool_calls > 0 for t in ts)))
    trajs = [t for p in problems for t in sorted(by_pid[p.id], key=lambda t: t.sample_index)]
    n = [r.n for r in records]
    c = [r.n_correct for r in records]
    pass_at = {k: M.pass_at_k(n, c, k) for k in M.default_ks(samples)} if records else {}
    metrics = {
        "accuracy": M.avg_at_k(n, c) if records else 0.0,
        "pass@k": pass_at.get(samples, 0.0),
        "maj@k": float(sum(r.majority_correct for r in records) / len(records)) if records else 0.0,
        **prefixed(trajectory_metrics(trajs), "", TOOL_METRICS),
    }
    assert set(metrics) == set(EVAL_METRICS), "eval metrics drifted from telemetry.EVAL_METRICS"
    extra = {"problems": float(len(records)), "trajectories": float(len(trajs)),
             "sandbox_errors": float(sum(t.sandbox_error for t in trajs)),
             "answer_rate": float(sum(t.answer is not None for t in trajs) / len(trajs)) if trajs else 0.0}
    return EvalReport(metrics=metrics, pass_at=pass_at, records=records, trajectories=list(trajs),
                      samples=samples, extra=extra, failures=M.failure_shares(trajs))


def chunk_problems(problems: Sequence[Problem], samples: int, batch_size: int) -> list[list[Problem]]:
    """Consecutive chunks of whole problems holding about `batch_size` trajectories (at least one problem each)."""
    per = max(1, batch_size // max(1, samples))
    return [list(problems[i:i + per]) for i in range(0, len(problems), per)]


def _complete(done: dict[str, dict[int, Trajectory]], pid: str, samples: int) -> bool:
    got = done.get(pid, {})
    return all(i in got for i in range(samples))


def evaluate(problems: Sequence[Problem], engine: Any, sandbox: SandboxLike, scorer: Any, *, rollout_cfg: Any, samples: int,
             max_tool_calls: int, seed: int = 0, done: Sequence[Trajectory] | None = None,
             on_chunk: Callable[[list[Trajectory]], None] | None = None,
             progress: Callable[[int], None] | None = None) -> EvalReport:
    """Roll out `samples` responses per problem with at most `max_tool_calls` executed calls each, score them with
    the training reward (`scorer.score(trajs, max_total_tokens)`), and summarise.

    rollout_cfg: a RolloutConfig whose temperature/top_p/token budgets are the eval's (see `eval_rollout_config`).
    done: already scored trajectories to reuse (resume). on_chunk: called with each newly scored chunk.
    progress: called with the number of trajectories each finished chunk added (reused ones are reported first).
    """
    from zerotir.rollout.tir import rollout  # the rollout stage's public entry point

    if samples < 1:
        raise ValueError(f"evaluate: samples must be >= 1, got {samples}")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError("evaluate: problem ids must be unique")
    known = set(ids)
    reuse: dict[str, dict[int, Trajectory]] = {}
    for t in done or []:
        if t.problem_id in known and 0 <= t.sample_index < samples:
            reuse.setdefault(t.problem_id, {}).setdefault(t.sample_index, t)
    kept = {pid: d for pid, d in reuse.items() if _complete(reuse, pid, samples)}
    n_reused = sum(len(d) for d in kept.values())
    if progress and n_reused:
        progress(n_reused)

    t0 = time.perf_counter()
    new: list[Trajectory] = []
    for ci, chunk in enumerate(chunk_problems(problems, samples, getattr(rollout_cfg, "batch_size", 64))):
        todo = [p for p in chunk if p.id not in kept]
        if not todo:
            continue
        trajs = rollout(todo, engine, sandbox, rollout_cfg, n_samples=samples, max_tool_calls=max_tool_calls,
                        seed=rollout_seed(seed, 0, ci))
        _normalise_sample_indices(trajs, samples)
        scorer.score(trajs, rollout_cfg.max_total_tokens)
        new.extend(trajs)
        if on_chunk:
            on_chunk(trajs)
        if progress:
            progress(len(trajs))
    seconds = time.perf_counter() - t0

    pool = [t for d in kept.values() for t in d.values()] + new
    report = summarize(problems, pool, samples)
    report.seconds = seconds
    report.extra["reused"] = float(n_reused)
    return report


def _normalise_sample_indices(trajs: list[Trajectory], samples: int) -> None:
    """Resuming keys samples by (problem_id, sample_index); make sure each problem's indices are 0..samples-1
    (kept as the rollout set them when they already are)."""
    by_pid: dict[str, list[Trajectory]] = {}
    for t in trajs:
        by_pid.setdefault(t.problem_id, []).append(t)
    for pid, ts in by_pid.items():
        if len(ts) != samples:
            raise RuntimeError(f"rollout returned {len(ts)} samples for problem '{pid}', expected {samples}")
        if sorted(t.sample_index for t in ts) != list(range(samples)):
            for i, t in enumerate(ts):
                t.sample_index = i


def eval_rollout_config(rollout_cfg: Any, eval_cfg: Any) -> Any:
    """A copy of the training RolloutConfig with the eval's sampling settings (temperature, top_p, n_samples,
    max_tool_calls) — what the periodic eval and `zerotir eval` pass to `evaluate`. Branching is off
    (branch_factor=1): an eval sample is one chain, so pass@k and the per-problem counts mean what they say."""
    return dataclasses.replace(rollout_cfg, temperature=eval_cfg.temperature, top_p=eval_cfg.top_p,
                               n_samples=eval_cfg.samples, max_tool_calls=eval_cfg.max_tool_calls, branch_factor=1)


def combine(reports: dict[str, EvalReport]) -> dict[str, float]:
    """Macro average over benchmarks (each benchmark weighs the same, as the paper's 'Avg' column)."""
    if not reports:
        return {}
    keys = list(next(iter(reports.values())).metrics)
    return {k: sum(r.metrics[k] for r in reports.values()) / len(reports) for k in keys}
