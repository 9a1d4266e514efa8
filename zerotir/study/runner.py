"""Run a study: every unfinished cell through a backend (at most `jobs` at once), progress lines, then analysis.

    spec = load_spec("configs/studies/toy-scaling.yaml")
    run_study(spec, "studies/toy-scaling", jobs=2)            # or backend="ray", address="auto"

Order: the cells in spec order. With `preregister=True` the held-out cells (`spec.held_out`, by default the largest
size) wait until every other cell has finished; then `zerotir.analysis.study.preregister` writes predictions.json
(time stamp, git revision), and only then do the held-out cells start. A re-run never rewrites predictions.json,
and refuses to preregister once a held-out cell has started without one (the predictions would not be blind).
The study ends with `zerotir.analysis.study.analyze_study` over the whole study dir.

The scheduler (`schedule`) is plain Python over the backend protocol in `backends.py`, so the local and Ray paths
share it, and tests drive it with a fake backend.
"""

from __future__ import annotations

import fcntl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from zerotir.study import state
from zerotir.study.backends import make_backend, threads_per_run
from zerotir.study.spec import SpecError, StudySpec

PREDICTIONS = "predictions.json"


class StudyError(RuntimeError):
    """The study could not go on (a cell failed before preregistration, a held-out cell ran unregistered, ...)."""


def eta_seconds(steps_done: int, steps_done_at_start: int, steps_total: int, elapsed_s: float) -> float | None:
    """Seconds left at the rate of steps finished in this session (None until one has finished)."""
    rate = (steps_done - steps_done_at_start) / elapsed_s if elapsed_s > 0 else 0.0
    if rate <= 0:
        return None
    return max(0, steps_total - steps_done) / rate


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@dataclass
class Progress:
    """Counts for the progress line; steps are read from the run dirs' metrics.jsonl."""

    runs: dict[str, Path]
    steps: dict[str, int]
    """train.steps per cell."""
    done: set[str] = field(default_factory=set)
    failed: dict[str, int] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    t0: float = field(default_factory=time.monotonic)
    start_steps: int = 0

    def __post_init__(self):
        self.start_steps = self.steps_done()

    def steps_done(self) -> int:
        return sum(min(self.steps[n], state.last_step(p)) for n, p in self.runs.items())

    def line(self) -> str:
        left = len(self.runs) - len(self.done) - len(self.failed) - len(self.running)
        eta = eta_seconds(self.steps_done(), self.start_steps, sum(self.steps.values()), time.monotonic() - self.t0)
        fail = f" · {len(self.failed)} failed" if self.failed else ""
        return (f"[{len(self.done)}/{len(self.runs)} done · {len(self.running)} running · {left} left{fail} · "
                f"ETA {fmt_seconds(eta)}]")


def schedule(names: list[str], runs: dict[str, Path], backend, jobs: int, progress: Progress,
             say: Callable[[str], None], poll_s: float = 0.5, heartbeat_s: float = 30.0) -> dict[str, int]:
    """Run `names` through `backend`, at most `jobs` at a time; returns {name: exit code}. On an exception
    (Ctrl-C included) every running cell is stopped before it propagates."""
    pending, running, codes = list(names), {}, {}
    last_beat = time.monotonic()
    try:
        while pending or running:
            while pending and len(running) < jobs:
                name = pending.pop(0)
                running[name] = (backend.start(runs[name]), time.monotonic())
                progress.running.add(name)
                say(f"{progress.line()} started {name}")
            for name, (handle, t_start) in list(running.items()):
                rc = backend.poll(handle)
                if rc is None:
                    continue
                del running[name]
                progress.running.discard(name)
                codes[name] = rc
                took = fmt_seconds(time.monotonic() - t_start)
                if rc == 0:
                    progress.done.add(name)
                    say(f"{progress.line()} finished {name} ({took})")
                else:
                    progress.failed[name] = rc
                    say(f"{progress.line()} FAILED {name} (exit {rc}, {took}): see "
                        f"{runs[name] / state.LOG_FILE}")
            if time.monotonic() - last_beat >= heartbeat_s:
                last_beat = time.monotonic()
                say(progress.line())
            if running:
                time.sleep(poll_s)
    finally:
        for handle, _ in running.values():
            backend.stop(handle)
    return codes


def _lock_study(study_dir: Path):
    study_dir.mkdir(parents=True, exist_ok=True)
    f = open(study_dir / ".study.lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise StudyError(f"study dir {study_dir} is in use by another `zerotir study`") from None
    return f


def run_study(spec: StudySpec, study_dir: str | Path, *, jobs: int = 1, backend: str = "local", address: str = "",
              cpus_per_run: int = 0, preregister: bool = False, analysis: bool = True,
              say: Callable[[str], None] = print) -> Path:
    """Run (or continue) the study in `study_dir`; returns it. Raises SpecError for a design that cannot continue
    this dir, StudyError when cells failed (after analysing those that finished)."""
    study_dir = Path(study_dir).resolve()
    if preregister and not spec.held_out:
        raise SpecError(f"{spec.path}: held_out: --preregister needs held-out cells (a grid over model.path with "
                        "at least two sizes, or `held_out:`)")
    lock = _lock_study(study_dir)
    try:
        added = state.prepare(study_dir, spec)
        runs = {c.name: state.run_dir(study_dir, c.name) for c in spec.cells}
        steps = {c.name: spec.resolve(c).train.steps for c in spec.cells}
        todo = [n for n in runs if not state.is_finished(runs[n], steps[n])]
        say(f"study {spec.name}: {len(runs)} cells in {study_dir} ({len(runs) - len(todo)} finished, "
            f"{len(added)} new to this dir)")
        held = set(spec.held_out) if preregister else set()
        predictions = study_dir / PREDICTIONS
        if held and not predictions.is_file():
            started = [n for n in held if state.last_step(runs[n]) > 0]
            if started:
                raise StudyError(f"held-out cell {started[0]} already ran without predictions.json: "
                                 "preregistration is no longer blind (use a new study dir)")
        threads = cpus_per_run or threads_per_run(jobs)
        be = make_backend(backend, threads, address)
        say(f"backend {backend}: {jobs} at a time, {threads} CPU threads each")
        progress = Progress(runs, steps, done={n for n in runs if n not in todo})
        try:
            first = [n for n in todo if n not in held]
            codes = schedule(first, runs, be, jobs, progress, say)
            if held:
                if any(codes.values()):
                    raise StudyError("cells failed before preregistration; fix them and re-run (predictions are "
                                     "made from the complete non-held-out design)")
                if not predictions.is_file():
                    from zerotir.analysis.study import preregister as write_predictions

                    out = write_predictions(study_dir, sorted(held), metrics=spec.metrics, x=spec.x,
                                            n_boot=spec.bootstrap)
                    say(f"preregistered predictions for {len(held)} held-out cells: {out}")
                codes.update(schedule([n for n in todo if n in held], runs, be, jobs, progress, say))
        finally:
            be.close()
        failed = sorted(n for n, rc in codes.items() if rc != 0)
        if analysis and len(failed) < len(runs):
            from zerotir.analysis.study import analyze_study

            report = analyze_study(study_dir, metrics=spec.metrics, x=spec.x, n_boot=spec.bootstrap)
            say(f"analysis: {report}")
        if failed:
            raise StudyError(f"{len(failed)} cell(s) failed: {', '.join(failed)} (logs: <run dir>/{state.LOG_FILE});"
                             " re-run the study to retry them")
        say(f"study {spec.name}: {progress.line()} in {fmt_seconds(time.monotonic() - progress.t0)}")
        return study_dir
    finally:
        lock.close()
