"""Logging conventions: stdlib logging (rich handler), the fixed metric vocabulary, run directories, metrics.jsonl.

Metric names are namespaced (`rollout/…`, `reward/…`, `loss/…`, `perf/…`, `eval/…`) and fixed: `MetricsWriter`
refuses a name that is not in `METRICS`, so every run, plot and analysis speaks the same words. Eval metrics for
a benchmark use the `eval/<benchmark>/<metric>` form, where <metric> is one of `EVAL_METRICS`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

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
    # loss / optimisation
    "loss/policy": "policy-gradient loss",
    "loss/kl": "KL term (estimator per algo.kl_estimator) averaged over sampled tokens",
    "loss/entropy": "mean token entropy of the policy on sampled tokens",
    "loss/value": "critic loss (GAE/PPO)",
    "loss/total": "loss that was back-propagated",
    "loss/clip_fraction": "share of sampled tokens whose ratio was clipped",
    "loss/approx_kl_behaviour": "approximate KL(behaviour || current) on sampled tokens",
    "loss/is_ratio_mean": "mean importance ratio current/behaviour",
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


def setup_logging(level: str = "INFO") -> None:
    """Configure the 'zerotir' logger once: rich output on a terminal, plain unwrapped lines otherwise."""
    global _CONFIGURED
    logger = logging.getLogger("zerotir")
    logger.setLevel(level.upper())
    if _CONFIGURED:
        return
    import sys

    try:
        if not sys.stderr.isatty():  # logs, CI, study cells: one plain line per record (rich would wrap at 80)
            raise ImportError
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    except ImportError:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                               datefmt="%H:%M:%S"))
    logger.addHandler(handler)
    # Propagation stays on: the root logger has no handler in a CLI run (no duplicates), and test/embedding
    # harnesses that listen on the root (pytest's caplog) still see zerotir's records.
    _CONFIGURED = True


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("zerotir") else f"zerotir.{name}")
