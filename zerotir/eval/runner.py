"""The `zerotir eval` driver: benchmarks × tool budgets through `core.evaluate`, persisted so it can resume.

Output directory:

    run.json                      settings of this eval (checked on resume: a changed setting is an error)
    samples/<bench>.tools<T>.jsonl  every scored sample, one Trajectory per line (reward, answer, correct filled)
    per_problem.jsonl             per-problem records (correct count, answers, majority vote) per budget/benchmark
    results.csv / results.md / results.json   the tables (rewritten after every benchmark, so partial runs show)

Resuming: samples are appended chunk by chunk; on restart the finished samples of each (budget, benchmark) are read
back and `evaluate` only generates problems that are not complete. A half-written last line (a kill mid-write) is
dropped. Adding benchmarks or budgets to an existing out dir is allowed; changing the model, sampling or token
settings is not (the numbers would mix).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerotir.config import Config, config_to_dict
from zerotir.eval.benchmarks import Benchmark, check_benchmark_names, load_benchmark
from zerotir.eval.report import ResultRow, markdown_table, write_csv
from zerotir.telemetry import get_logger
from zerotir.types import RecordError, Trajectory, write_jsonl

log = get_logger("eval")


class EvalSetupError(ValueError):
    """Bad eval settings or an out dir holding an incompatible eval; one line naming the problem."""


@dataclass
class EvalJob:
    model: str
    benchmarks: list[str]
    out: Path
    tool_budgets: list[int]
    samples: int
    temperature: float
    top_p: float
    limit: int = 0
    seed: int = 0
    data_dir: str = ""
    source: str = "auto"
    device: str = "auto"
    overwrite: bool = False
    progress: bool = True
    cfg: Config = field(default_factory=Config)
    """Rollout / sandbox / reward / model sections come from here (same config as training)."""


def parse_tool_budgets(text: str | int | list[int]) -> list[int]:
    """'0,1,2,4,8' → [0, 1, 2, 4, 8] (sorted, unique); each must be a non-negative integer."""
    if isinstance(text, int):
        items: list[Any] = [text]
    elif isinstance(text, list):
        items = text
    else:
        items = [s.strip() for s in str(text).split(",") if s.strip()]
    out = []
    for s in items:
        try:
            v = int(s)
        except (TypeError, ValueError):
            raise EvalSetupError(f"--max-tool-calls: '{s}' is not an integer (e.g. 4 or 0,1,2,4,8)") from None
        if v < 0:
            raise EvalSetupError(f"--max-tool-calls: {v} is negative")
        out.append(v)
    if not out:
        raise EvalSetupError("--max-tool-calls: no value given")
    return sorted(set(out))


def safe_name(name: str) -> str:
    """A file-name-safe form of a benchmark name or spec ('toy:heldout' → 'toy_heldout')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "bench"


def samples_path(out: Path, bench: str, budget: int) -> Path:
    return out / "samples" / f"{safe_name(bench)}.tools{budget}.jsonl"


def read_done(path: Path) -> list[Trajectory]:
    """Scored samples already written. A broken LAST line (killed mid-write) is cut off; a broken line elsewhere
    is an error naming file:line."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    out: list[Trajectory] = []
    good_bytes = 0
    for i, line in enumerate(lines, 1):
        if not line.strip():
            good_bytes += len(line.encode())
            continue
        try:
            out.append(Trajectory.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError, KeyError, RecordError) as e:
            if i == len(lines):
                log.warning("%s:%d: dropping a half-written last line (interrupted run)", path, i)
                with open(path, "r+b") as f:
                    f.truncate(good_bytes)
                break
            raise EvalSetupError(f"{path}:{i}: not a scored Trajectory ({e}); remove the file to redo it") from None
        good_bytes += len(line.encode())
    return out


def _settings(job: EvalJob) -> dict[str, Any]:
    """What must not change between an interrupted eval and its resumption."""
    c = config_to_dict(job.cfg)
    rollout = {k: v for k, v in c["rollout"].items() if k not in ("batch_size", "n_samples", "max_tool_calls",
                                                                   "temperature", "top_p")}
    return {"model": str(job.model), "samples": job.samples, "temperature": job.temperature, "top_p": job.top_p,
            "seed": job.seed, "dtype": c["model"]["dtype"], "rollout": rollout, "reward": c["reward"]}


def _check_out_dir(job: EvalJob) -> None:
    run = job.out / "run.json"
    now = _settings(job)
    if run.is_file() and not job.overwrite:
        try:
            before = json.loads(run.read_text())["settings"]
        except (json.JSONDecodeError, KeyError) as e:
            raise EvalSetupError(f"{run}: unreadable ({e}); use another --out or --overwrite") from None
        diffs = [f"{k}: {before.get(k)!r} → {now[k]!r}" for k in now if before.get(k) != now[k]]
        if diffs:
            raise EvalSetupError(f"{job.out} holds an eval with different settings ({'; '.join(diffs)[:400]}); "
                                 f"use another --out, or --overwrite to start over")
        log.info("resuming the eval in %s", job.out)
    elif job.overwrite and job.out.exists():
        import shutil

        for sub in ("samples",):
            shutil.rmtree(job.out / sub, ignore_errors=True)
        for f in ("run.json", "per_problem.jsonl", "results.csv", "results.md", "results.json"):
            (job.out / f).unlink(missing_ok=True)
    (job.out / "samples").mkdir(parents=True, exist_ok=True)
    meta = {"settings": now, "benchmarks": job.benchmarks, "tool_budgets": job.tool_budgets, "limit": job.limit,
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    run.write_text(json.dumps(meta, indent=2) + "\n")


def prepare(job: EvalJob) -> list[Benchmark]:
    """Every check that can fail, before the model loads: settings, benchmark names and files, model dir, out dir."""
    from zerotir.models import check_model_dir

    if job.samples < 1:
        raise EvalSetupError(f"--samples must be >= 1, got {job.samples}")
    if job.temperature < 0 or not 0 < job.top_p <= 1:
        raise EvalSetupError(f"need --temperature >= 0 and 0 < --top-p <= 1 (got {job.temperature}, {job.top_p})")
    if job.temperature == 0 and job.samples > 1:
        log.warning("greedy decoding (--temperature 0): all samples would be identical; using --samples 1")
        job.samples = 1
    check_benchmark_names(job.benchmarks)
    benches = [load_benchmark(b, data_dir=job.data_dir or None, source=job.source, limit=job.limit, seed=job.seed)
               for b in job.benchmarks]
    for b in benches:
        if b.skipped:
            log.warning("%s: %d row(s) without a usable problem/answer were skipped, e.g. %s", b.name,
                        len(b.skipped), b.skipped[0])
    check_model_dir(job.model)
    _check_out_dir(job)
    return benches


def run_eval(job: EvalJob) -> list[ResultRow]:
    """Run (or resume) the whole eval; returns the result rows (also written to job.out)."""
    from zerotir.eval.core import evaluate

    benches = prepare(job)
    total = sum(len(b.problems) for b in benches) * job.samples * len(job.tool_budgets)
    rcfg = dataclasses.replace(job.cfg.rollout, temperature=job.temperature, top_p=job.top_p, n_samples=job.samples)
    engine = _make_engine(job)
    rows: list[ResultRow] = []
    per_problem: list[dict] = []
    with _make_sandbox(job.cfg) as sandbox, _make_scorer(job.cfg) as scorer, _Progress(total, job.progress) as bar:
        for budget in job.tool_budgets:
            rcfg_b = dataclasses.replace(rcfg, max_tool_calls=budget)
            for b in benches:
                path = samples_path(job.out, b.name, budget)
                bar.describe(f"{b.name} tools={budget}")
                report = evaluate(b.problems, engine, sandbox, scorer, rollout_cfg=rcfg_b, samples=job.samples,
                                  max_tool_calls=budget, seed=job.seed, done=read_done(path),
                                  on_chunk=lambda trajs, p=path: write_jsonl(p, trajs, append=True),
                                  progress=bar.advance)
                row = ResultRow.from_report(report, benchmark=b.name, title=b.title, max_tool_calls=budget)
                row.extra["skipped_rows"] = float(len(b.skipped))
                row.extra["seconds"] = report.seconds
                rows.append(row)
                per_problem += [{"max_tool_calls": budget, "benchmark": b.name, **dataclasses.asdict(r)}
                                for r in report.records]
                m = report.metrics
                log.info("%s tools=%d: acc %.1f%%  pass@%d %.1f%%  maj@%d %.1f%%  code %.1f%%  (%d problems x %d, "
                         "%.1fs, %d reused)", b.name, budget, 100 * m["accuracy"], job.samples, 100 * m["pass@k"],
                         job.samples, 100 * m["maj@k"], 100 * m["code_ratio"], len(b.problems), job.samples,
                         report.seconds, int(report.extra.get("reused", 0)))
                write_results(job, rows, per_problem)
    return rows


def write_results(job: EvalJob, rows: list[ResultRow], per_problem: list[dict]) -> None:
    note = (f"Model `{job.model}`, k = {job.samples} samples per problem, temperature {job.temperature}, "
            f"top-p {job.top_p}, max total tokens {job.cfg.rollout.max_total_tokens}, template "
            f"'{job.cfg.rollout.template}'" + (f", first {job.limit} problems per benchmark" if job.limit else "")
            + ".")
    (job.out / "results.md").write_text(markdown_table(rows, title="zerotir eval", note=note), encoding="utf-8")
    write_csv(rows, job.out / "results.csv")
    (job.out / "results.json").write_text(json.dumps({"note": note, "rows": [r.to_dict() for r in rows]}, indent=2)
                                          + "\n", encoding="utf-8")
    write_jsonl(job.out / "per_problem.jsonl", per_problem)


# ------------------------------------------------------------------------------- the stages' public entry points


def _make_engine(job: EvalJob):
    from zerotir.rollout.engines import make_engine

    return make_engine(job.cfg, model_path=job.model, device=job.device, seed=job.seed)


def _make_sandbox(cfg: Config):
    from zerotir.sandbox import make_sandbox

    try:
        return make_sandbox(cfg.sandbox)
    except Exception as e:  # e.g. an isolation layer missing: say how to choose a weaker level
        raise EvalSetupError(f"the sandbox could not start ({type(e).__name__}: {e}); see `zerotir sandbox --help`, "
                             f"or choose e.g. --set sandbox.isolation=rlimits") from None


def _make_scorer(cfg: Config):
    from zerotir.reward import RewardScorer

    return RewardScorer(cfg.reward)


class _Progress:
    """A rich progress bar over samples (count, elapsed, ETA) on stderr; silent when disabled."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled = total, enabled
        self._p = None
        self._task = None

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("samples"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                               console=Console(stderr=True))
            self._p.start()
            self._task = self._p.add_task("eval", total=self.total)
        return self

    def describe(self, text: str) -> None:
        if self._p is not None:
            self._p.update(self._task, description=text)

    def advance(self, n: int) -> None:
        if self._p is not None:
            self._p.advance(self._task, n)

    def __exit__(self, *exc) -> None:
        if self._p is not None:
            self._p.stop()
