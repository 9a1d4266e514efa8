"""Reading run directories (config.yaml + metrics.jsonl only) and grouping seeds of the same configuration.

A run directory holds its resolved config (`config.yaml`, written by `make_run_dir`) and `metrics.jsonl` (one JSON
object per step; a still-running run may have a partial last line, which is skipped). Nothing else is needed, so
finished runs, running runs and runs copied from other machines all load the same way.

Grouping: runs whose flattened configs are equal once `IGNORED_KEYS` (seed, names, paths, logging and pure
execution knobs) are removed are seeds of one group. Groups are labelled by the config keys that differ between them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

IGNORED_KEYS: tuple[str, ...] = (
    "train.seed", "train.run_dir", "train.name", "logging.*", "model.device", "sandbox.url", "sandbox.token",
    "sandbox.workers", "reward.verify_workers", "rollout.batch_size", "train.ray_address", "train.save_every",
    "train.keep_checkpoints", "train.transcripts_every",
)
"""Config keys that do not define an experiment (a trailing '.*' ignores a whole section). Also ignored:
`train.steps` under a constant LR schedule, where a shorter run is a prefix of a longer one."""

NOT_METRICS = ("step", "epoch", "policy_version")

LABEL_FIRST = ("rollout.max_tool_calls",)
"""Keys named first in group labels (the tools / no-tools split is the comparison readers look for)."""


@dataclass
class Run:
    """One run directory: its flattened config and every numeric metric as {step: value}."""

    path: Path
    name: str
    config: dict[str, Any] = field(default_factory=dict)
    """Flattened resolved config ('section.key' → value); empty when config.yaml is missing or unreadable."""
    series: dict[str, dict[float, float]] = field(default_factory=dict)
    n_rows: int = 0
    notes: list[str] = field(default_factory=list)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} → {'a.b': 1}; lists become tuples so values are hashable."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = tuple(v) if isinstance(v, list) else v
    return out


def _load_config(path: Path, notes: list[str]) -> dict[str, Any]:
    if not path.is_file():
        notes.append(f"{path}: no config.yaml; the run forms its own group")
        return {}
    from zerotir.config import ConfigError, config_to_dict, load_config

    try:
        return flatten(config_to_dict(load_config(path)))
    except ConfigError as e:
        # A config from another version of zerotir (unknown/renamed key): group on its raw contents instead.
        import yaml

        notes.append(f"{path}: {e}; grouping on the raw YAML")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            notes.append(f"{path}: not valid YAML; the run forms its own group")
            return {}
        return flatten(data) if isinstance(data, dict) else {}


def read_rows(path: Path, notes: list[str]) -> list[dict]:
    """JSON rows of a metrics.jsonl; undecodable lines (a partial last line of a running run) are skipped."""
    rows, bad = [], []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad.append(i)
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad.append(i)
    if bad:
        notes.append(f"{path}: skipped undecodable line(s) {bad[:5]}{' …' if len(bad) > 5 else ''} "
                     "(a partially written last line is expected while a run is going)")
    return rows


def rows_to_series(rows: list[dict], notes: list[str] | None = None) -> dict[str, dict[float, float]]:
    """{metric: {step: value}} from metrics rows. A row without 'step' gets its 1-based position; a repeated step
    (a resumed run) keeps the last value; non-numeric and non-finite values are left out."""
    series: dict[str, dict[float, float]] = {}
    missing_step = 0
    for i, row in enumerate(rows, 1):
        step = row.get("step")
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            step, missing_step = i, missing_step + 1
        for k, v in row.items():
            if k in NOT_METRICS or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if math.isfinite(v):
                series.setdefault(k, {})[float(step)] = float(v)
    if missing_step and notes is not None:
        notes.append(f"{missing_step} row(s) without 'step': their line number was used")
    return series


def load_run(path: str | Path) -> Run:
    """Load one run directory. Raises FileNotFoundError (naming the path) when it has no metrics.jsonl."""
    p = Path(path)
    metrics = p / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{p}: no metrics.jsonl (is this a run directory?)")
    notes: list[str] = []
    cfg = _load_config(p / "config.yaml", notes)
    rows = read_rows(metrics, notes)
    if not rows:
        notes.append(f"{metrics}: no complete rows yet")
    return Run(path=p, name=p.name, config=cfg, series=rows_to_series(rows, notes), n_rows=len(rows), notes=notes)


def _ignored(key: str, ignore: tuple[str, ...]) -> bool:
    return any(key == k or (k.endswith(".*") and key.startswith(k[:-1])) for k in ignore)


def effective_ignore(cfg: dict[str, Any], ignore: tuple[str, ...] = IGNORED_KEYS) -> tuple[str, ...]:
    """`ignore`, plus train.steps when the LR schedule is constant (the run length then changes nothing else)."""
    return ignore + ("train.steps",) if cfg.get("optim.schedule", "constant") == "constant" else ignore


def experiment_key(cfg: dict[str, Any], ignore: tuple[str, ...] = IGNORED_KEYS) -> str:
    ign = effective_ignore(cfg, ignore)
    return json.dumps({k: v for k, v in sorted(cfg.items()) if not _ignored(k, ign)}, default=str)


@dataclass
class Group:
    """Seeds of one configuration. `differs` holds the config keys (and values) that tell groups apart."""

    label: str
    runs: list[Run]
    differs: dict[str, Any] = field(default_factory=dict)

    @property
    def seeds(self) -> list[Any]:
        return [r.config.get("train.seed") for r in self.runs]


def _fmt_value(key: str, v: Any) -> str:
    if key == "rollout.max_tool_calls" and v == 0:
        return "0 (no tools)"
    return str(v)


def group_runs(runs: list[Run], ignore: tuple[str, ...] = IGNORED_KEYS) -> list[Group]:
    """Group runs by configuration (all keys except `ignore`), in first-seen order, labelled by differing keys."""
    buckets: dict[str, list[Run]] = {}
    for r in runs:
        key = experiment_key(r.config, ignore) if r.config else f"__noconfig__{r.path}"
        buckets.setdefault(key, []).append(r)
    members = list(buckets.values())
    configured = [g for g in members if g[0].config]
    keys = sorted({k for g in configured for k in g[0].config
                   if not _ignored(k, effective_ignore(g[0].config, ignore))})
    differing = [k for k in keys if len({json.dumps(g[0].config.get(k), default=str) for g in configured}) > 1]
    differing.sort(key=lambda k: (k not in LABEL_FIRST, k))
    groups = []
    for g in members:
        if not g[0].config:
            groups.append(Group(label=g[0].name, runs=g))
            continue
        differs = {k: g[0].config.get(k) for k in differing}
        if differs:
            label = ", ".join(f"{k}={_fmt_value(k, v)}" for k, v in differs.items())
        else:
            names = {r.config.get("train.name") for r in g}
            label = names.pop() if len(names) == 1 and len(members) == 1 else g[0].name
        groups.append(Group(label=str(label), runs=g, differs=differs))
    return groups


def group_band(group: Group, metric: str, window: int = 1, level: float = 0.95) -> dict[str, np.ndarray]:
    """Across-seed mean and t-interval per step of a (per-seed rolling-mean smoothed) metric.

    Returns {"step", "mean", "lo", "hi", "n"}, each [S] over the union of the seeds' steps; lo/hi are NaN where
    fewer than two seeds have the step.
    """
    from zerotir.analysis.fits import rolling_mean

    per_seed = []
    for r in group.runs:
        s = r.series.get(metric)
        if not s:
            continue
        steps = np.array(sorted(s), dtype=float)
        vals = rolling_mean(np.array([s[k] for k in steps]), window)
        per_seed.append(dict(zip(steps.tolist(), vals.tolist())))
    all_steps = np.array(sorted({k for d in per_seed for k in d}), dtype=float)
    mean, lo, hi, n = (np.full(len(all_steps), np.nan) for _ in range(4))
    for i, st in enumerate(all_steps):
        v = np.array([d[st] for d in per_seed if st in d])
        n[i] = len(v)
        mean[i] = v.mean()
        if len(v) >= 2:
            half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
            lo[i], hi[i] = mean[i] - half, mean[i] + half
    return {"step": all_steps, "mean": mean, "lo": lo, "hi": hi, "n": n}


def pooled_points(group: Group, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """All seeds' (step, value) points of a metric, concatenated: x [N], y [N] (what the group's laws are fitted to)."""
    xs, ys = [], []
    for r in group.runs:
        for k, v in r.series.get(metric, {}).items():
            xs.append(k)
            ys.append(v)
    return np.array(xs, dtype=float), np.array(ys, dtype=float)


def xy_series(run: Run, metric: str, x: str = "step") -> tuple[np.ndarray, np.ndarray, str]:
    """(x [n], y [n], note) of one run's metric against axis `x` ('step' or a metric such as 'compute/flops',
    read from the same row): steps where either is missing are left out, named in the note."""
    ys = run.series.get(metric, {})
    if x == "step":
        steps = sorted(ys)
        return np.array(steps, dtype=float), np.array([ys[s] for s in steps], dtype=float), ""
    xs = run.series.get(x, {})
    if ys and not xs:
        return np.zeros(0), np.zeros(0), f"{run.name}: no '{x}' in metrics.jsonl; left out of the {x} axis"
    steps = sorted(s for s in ys if s in xs)
    miss = len(ys) - len(steps)
    note = f"{run.name}: {miss} '{metric}' row(s) without '{x}' left out" if miss else ""
    return np.array([xs[s] for s in steps], dtype=float), np.array([ys[s] for s in steps], dtype=float), note


def rekey(run: Run, x: str) -> Run:
    """The run with every series keyed by axis `x` (a cumulative metric such as 'compute/flops') instead of step;
    rows without `x` are dropped. x = 'step' returns the run unchanged."""
    if x == "step":
        return run
    xs = run.series.get(x, {})
    notes = list(run.notes)
    if not xs:
        notes.append(f"{run.path}: no '{x}' in metrics.jsonl; the run has no points on the {x} axis")
    series = {m: {xs[s]: v for s, v in sv.items() if s in xs} for m, sv in run.series.items()}
    return Run(path=run.path, name=run.name, config=run.config, series=series, n_rows=run.n_rows, notes=notes)


def run_params(run: Run) -> float | None:
    """The model size N of a run: its logged `model/params` (the last value), None when it logs none."""
    s = run.series.get("model/params")
    return float(s[max(s)]) if s else None


def is_finished(run: Run) -> bool:
    """True when the run's metrics reach its configured `train.steps` (a killed or running run has not)."""
    steps = [k for s in run.series.values() for k in s]
    target = run.config.get("train.steps")
    return bool(steps) and isinstance(target, (int, float)) and max(steps) >= target
