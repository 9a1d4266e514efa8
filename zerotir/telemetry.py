"""Logging conventions: stdlib logging (rich handler), the fixed metric vocabulary, run directories, metrics.jsonl,
and the terminal's live view (`LiveView`: step metrics fitted to the terminal width, `Progress` within a step,
warnings kept above it).

Metric names are namespaced (`rollout/…`, `reward/…`, `loss/…`, `perf/…`, `eval/…`) and fixed: `MetricsWriter`
refuses a name that is not in `METRICS`, so every run, plot and analysis speaks the same words. Eval metrics for
a benchmark use the `eval/<benchmark>/<metric>` form, where <metric> is one of `EVAL_METRICS`.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

METRICS: dict[str, str] = {
    "step": "RL step (1-based)",
    "epoch": "passes over the training problems so far",
    "policy_version": "learner updates applied so far",
    # rollout
    "rollout/code_ratio": "share of responses with at least one executed tool call",
    "rollout/tool_calls_per_response": "executed tool calls per response",
    "rollout/tool_error_rate": "share of executed calls whose status is error",
    "rollout/tool_timeouts": "executed calls that timed out (count)",
    "rollout/tool_oom": "executed calls that ran out of memory (count)",
    "rollout/sandbox_errors": "calls that hit a sandbox infrastructure failure (count)",
    "rollout/budget_exceeded_calls": "code blocks not run because the tool budget was spent (count)",
    "rollout/response_tokens": "mean response length in tokens, model-sampled only",
    "rollout/tool_tokens": "mean inserted (tool output) tokens per response",
    "rollout/total_tokens": "mean response length including inserted tokens",
    "rollout/truncation_rate": "share of responses that ended with finish reason 'length'",
    "rollout/num_trajectories": "trajectories sampled this step",
    "rollout/staleness_mean": "mean policy-version lag of the trajectories trained on (async)",
    "rollout/staleness_max": "max policy-version lag (async)",
    # reward
    "reward/mean": "mean total reward",
    "reward/accuracy": "share of responses whose final answer verified correct",
    "reward/format": "share of responses with an extractable final answer",
    "reward/accuracy_with_code": "accuracy among responses with an executed call",
    "reward/accuracy_without_code": "accuracy among responses without an executed call",
    "reward/verify_timeouts": "verifications that hit the per-item time limit (count)",
    # filtering
    "filter/kept": "trajectories kept for the update",
    "filter/dropped_uniform_groups": "groups dropped by dynamic sampling (all right or all wrong)",
    "filter/dropped_sandbox_errors": "trajectories dropped for sandbox infrastructure failures",
    "filter/dropped_overlong": "trajectories masked out by overlong filtering",
    "filter/dropped_roc": "trajectories the 'roc' filter down-sampled away (oversampled groups back to n_samples)",
    "filter/dropped_void_turns": "trajectories dropped for a void turn (neither a code block nor a final answer)",
    # loss / optimisation
    "loss/policy": "policy-gradient loss",
    "loss/kl": "KL term (estimator per algo.kl_estimator) averaged over sampled tokens",
    "loss/entropy": "mean token entropy of the policy on sampled tokens",
    "loss/value": "critic loss (GAE/PPO)",
    "loss/total": "loss that was back-propagated",
    "loss/clip_fraction": "share of sampled tokens whose ratio was clipped",
    "loss/approx_kl_behaviour": "approximate KL(behaviour || current) on sampled tokens",
    "loss/is_ratio_mean": "mean importance ratio current/behaviour",
    "loss/tis_clip_fraction": "share of sampled tokens whose proximal/behaviour weight exceeded algo.tis_cap "
                              "(truncated IS clamps them, decoupled PPO drops them)",
    "loss/is_ratio_max": "max importance ratio current/behaviour",
    "loss/advantage_mean": "mean advantage on sampled tokens",
    "loss/advantage_std": "std of advantages on sampled tokens",
    "optim/grad_norm": "global gradient norm before clipping",
    "optim/lr": "learning rate",
    # performance
    "perf/step_seconds": "wall time of the whole step",
    "perf/rollout_seconds": "wall time of rollout (generation + tools)",
    "perf/reward_seconds": "wall time of reward verification",
    "perf/update_seconds": "wall time of the learner update",
    "perf/eval_seconds": "wall time of the periodic eval",
    "perf/tokens_per_second": "sampled tokens per second of rollout",
    "perf/tool_seconds": "summed wall time of tool executions",
    # compute (cumulative from step 0; see zerotir/train/compute.py for how FLOPs are counted)
    "compute/flops": "cumulative estimated FLOPs: rollout and reference/critic forwards, training forward+backward",
    "compute/tokens": "cumulative tokens processed: sampled (rollout) + trained (learner)",
    "compute/seconds": "cumulative wall seconds of the steps",
    "compute/cpu_seconds": "cumulative CPU seconds of this process (and its children) during the steps",
    "model/params": "parameters of the policy model",
    # eval (held-out; also eval/<benchmark>/<metric>)
    "eval/accuracy": "held-out avg@k accuracy",
    "eval/code_ratio": "held-out share of responses with an executed call",
    "eval/tool_calls_per_response": "held-out executed calls per response",
    "eval/response_tokens": "held-out mean sampled tokens per response",
    "eval/tool_error_rate": "held-out share of executed calls that errored",
    "eval/truncation_rate": "held-out share of responses that hit the length budget",
}

EVAL_METRICS: tuple[str, ...] = (
    "accuracy", "pass@k", "maj@k", "code_ratio", "tool_calls_per_response", "tool_error_rate", "tool_timeout_rate",
    "response_tokens", "tool_tokens", "truncation_rate",
)


def is_known_metric(name: str) -> bool:
    if name in METRICS:
        return True
    parts = name.split("/")
    return len(parts) == 3 and parts[0] == "eval" and (parts[2] in EVAL_METRICS or parts[2].startswith("pass@")
                                                       or parts[2].startswith("maj@"))


class MetricsWriter:
    """Appends one JSON object per step to `<run_dir>/metrics.jsonl`. Unknown metric names are an error."""

    def __init__(self, run_dir: str | Path, filename: str = "metrics.jsonl"):
        self.path = Path(run_dir) / filename
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: dict[str, Any]) -> None:
        unknown = [k for k in row if not is_known_metric(k)]
        if unknown:
            raise KeyError(f"metric name(s) not in the vocabulary (zerotir/telemetry.py METRICS): {unknown}")
        clean = {k: (float(v) if hasattr(v, "__float__") and not isinstance(v, (int, bool)) else v)
                 for k, v in row.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(clean) + "\n")
            f.flush()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl (a partially written last line, from a run still going, is skipped)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def make_run_dir(template: str, name: str, cfg: Any = None) -> Path:
    """Create a fresh run directory from `template` ({name}, {time}) and save the resolved config into it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(template.format(name=name, time=stamp))
    base, k = path, 1
    while path.exists() and any(path.iterdir()):
        path = base.with_name(f"{base.name}-{k}")
        k += 1
    path.mkdir(parents=True, exist_ok=True)
    if cfg is not None:
        from zerotir.config import save_config

        save_config(cfg, path / "config.yaml")
    return path


_CONFIGURED = False


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at each record, not the stream it was created with: a harness that swaps
    stderr (pytest's capture, a notebook) and later closes the old one must not turn log lines into errors."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(level: str = "INFO") -> None:
    """Configure the 'zerotir' logger once: rich output on a terminal, plain unwrapped lines otherwise."""
    global _CONFIGURED
    logger = logging.getLogger("zerotir")
    logger.setLevel(level.upper())
    if _CONFIGURED:
        return
    try:
        if not sys.stderr.isatty():  # logs, CI, study cells: one plain line per record (rich would wrap at 80)
            raise ImportError
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    except ImportError:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                               datefmt="%H:%M:%S"))
    logger.addHandler(handler)
    # Propagation stays on: the root logger has no handler in a CLI run (no duplicates), and test/embedding
    # harnesses that listen on the root (pytest's caplog) still see zerotir's records.
    _CONFIGURED = True


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("zerotir") else f"zerotir.{name}")


# ------------------------------------------------------------------------------------ the live view (terminal only)

class Progress:
    """Work done within the phases running now, for the live view: per phase ('rollout', counted in trajectories;
    'update', in minibatches) how many units are done of how many. The phases write it; the live view reads it from
    its refresh thread, hence the lock. Observation only: nothing in training reads it back."""

    UNITS = {"rollout": "trajectories", "update": "minibatches"}

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phases: dict[str, list[int]] = {}

    def begin(self, phase: str, total: int) -> None:
        with self._lock:
            self._phases[phase] = [0, int(total)]

    def advance(self, phase: str, n: int = 1) -> None:
        with self._lock:
            if phase in self._phases:
                self._phases[phase][0] += n

    def end(self, phase: str) -> None:
        with self._lock:
            self._phases.pop(phase, None)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """{phase: (done, total)} of the phases begun and not yet ended."""
        with self._lock:
            return {k: (d, t) for k, (d, t) in self._phases.items()}


def table_width(col_widths: Sequence[int]) -> int:
    """Characters a rich table with edges and one space of padding each side takes for columns of these content
    widths: each column is width + 2 (padding) + 1 (its left rule), plus the right edge."""
    return sum(w + 3 for w in col_widths) + 1


def pack_columns(col_widths: Sequence[int], max_width: int) -> list[list[int]]:
    """Split columns 1.. into consecutive groups that each fit `max_width` together with column 0 (the step, repeated
    in every group), so a narrow terminal shows two (or more) tables instead of cutting names short ('rewa…').
    A column too wide even alone with column 0 still gets a group of its own."""
    groups: list[list[int]] = [[0]]
    for j in range(1, len(col_widths)):
        trial = groups[-1] + [j]
        if table_width([col_widths[i] for i in trial]) <= max_width or len(groups[-1]) == 1:
            groups[-1] = trial
        else:
            groups.append([0, j])
    return groups


class _ConsoleWriter:
    """A text stream that prints each complete line on a rich console (so a live display keeps it above itself)."""

    def __init__(self, console: Any):
        self.console, self.buf = console, ""

    def write(self, s: str) -> int:
        self.buf += s
        *lines, self.buf = self.buf.split("\n")
        if lines:  # one print per write: a multi-line warning moves the live region once
            self._print("\n".join(lines))
        return len(s)

    def _print(self, text: str) -> None:
        from rich.text import Text

        self.console.print(Text(text), soft_wrap=True)

    def flush(self) -> None:
        if self.buf:
            self._print(self.buf)
            self.buf = ""


class LiveView:
    """The terminal's live table of step metrics (rich), redrawn at 2 Hz while training runs:

    - fits the terminal: it is laid out at each redraw for the current width; columns that do not fit go into a
      second table (each with the step column) rather than being cut short;
    - shows progress within the running step (`Progress`: rollout trajectories, update minibatches) under the table;
    - keeps warnings above itself: while it runs, Python warnings and log records from any logger that writes to
      the terminal are printed through its console, which puts them above the live region instead of through it.

    `columns`: (header, metric key, format) triples; the first is the step. Use as a context manager."""

    def __init__(self, columns: Sequence[tuple[str, str, str]], *, title: str = "zerotir train",
                 progress: Progress | None = None, console: Any = None, max_rows: int = 20):
        from rich import get_console

        self.columns, self.title, self.progress = list(columns), title, progress
        self.console = console or get_console()   # the console RichHandler prints on, too
        self.max_rows = max_rows
        self.rows: list[list[str]] = []
        self._live: Any = None
        self._restore: list[Any] = []

    def add_row(self, row: dict[str, Any]) -> None:
        self.rows.append([(fmt.format(row[k]) if k in row else "") for _, k, fmt in self.columns])
        if self._live is not None:
            self._live.refresh()

    def renderables(self, width: int) -> list[Any]:
        """The tables (one, or more when the columns do not fit `width`) and the progress lines."""
        from rich.table import Table

        groups = pack_columns(self._widths(), width)
        shown = self.rows[-max(3, self.max_rows // len(groups)):]
        out: list[Any] = []
        for gi, group in enumerate(groups):
            t = Table(title=self.title if gi == 0 else None, expand=False)
            for i in group:
                t.add_column(self.columns[i][0], justify="right", no_wrap=True)
            for cells in shown:
                t.add_row(*[cells[i] for i in group])
            out.append(t)
        return out + self._progress_lines(width)

    def _widths(self) -> list[int]:
        shown = self.rows[-self.max_rows:]
        return [max([len(name)] + [len(r[i]) for r in shown]) for i, (name, _, _) in enumerate(self.columns)]

    def _progress_lines(self, width: int) -> list[Any]:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        if self.progress is None:
            return []
        step = int(float(self.rows[-1][0])) + 1 if self.rows and self.rows[-1][0] else None
        lines = []
        for phase, (done, total) in self.progress.snapshot().items():
            label = (f"step {step} " if step is not None else "") + \
                f"{phase} {done}/{total} {Progress.UNITS.get(phase, '')}".rstrip()
            grid = Table.grid(padding=(0, 1))
            grid.add_row(label, ProgressBar(total=max(total, 1), completed=done,
                                            width=max(10, min(40, width - len(label) - 1))))
            lines.append(grid)
        return lines

    def __rich_console__(self, console: Any, options: Any):
        yield from self.renderables(options.max_width)

    def __enter__(self) -> "LiveView":
        from rich.live import Live

        self._route_above()
        self._live = Live(self, console=self.console, refresh_per_second=2, transient=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._live is not None:
                self._live.__exit__(*exc)
        finally:
            self._live = None
            for undo in reversed(self._restore):
                undo()
            self._restore = []

    def _route_above(self) -> None:
        """Send warnings and log records through the live console while the view runs. A logging.StreamHandler holds
        the stderr it was made with, so rich's redirection of sys.stderr misses it and its lines would print through
        the table: such handlers (on any logger) write via the console for the duration; RichHandlers print on it."""
        import warnings

        writer = _ConsoleWriter(self.console)
        terminal = {id(s) for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__) if s is not None}
        loggers = [logging.getLogger()] + [lg for lg in list(logging.Logger.manager.loggerDict.values())
                                           if isinstance(lg, logging.Logger)]
        for h in {id(h): h for lg in loggers for h in lg.handlers}.values():
            if hasattr(h, "console") and hasattr(h, "render_message"):   # rich.logging.RichHandler
                old = h.console
                h.console = self.console
                self._restore.append(lambda h=h, old=old: setattr(h, "console", old))
            elif type(h) is logging.StreamHandler and id(h.stream) in terminal:   # not FileHandler & co.
                old = h.stream
                h.stream = writer
                self._restore.append(lambda h=h, old=old: setattr(h, "stream", old))
        show = warnings.showwarning

        def show_above(message, category, filename, lineno, file=None, line=None):
            writer.write(warnings.formatwarning(message, category, filename, lineno, line))

        warnings.showwarning = show_above
        self._restore.append(lambda: setattr(warnings, "showwarning", show))
        self._restore.append(writer.flush)
