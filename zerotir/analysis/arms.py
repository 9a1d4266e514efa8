"""The arms of an ablation side by side: one row per arm, seed-level 95% CIs, differences from a baseline arm.

An ablation study (`configs/studies/ablations.yaml`) runs every arm with the same seeds, steps and prompts. Per
seed, from its metrics.jsonl:
- final accuracy: the mean of the run's last two held-out evals (one eval of 64 problems has a binomial standard
  error of up to ±0.06, so a single point is too noisy to rank arms by);
- compute to half the gain: the first x (compute/flops) at which held-out accuracy reaches R0 + (final − R0)/2,
  with R0 the step-0 eval, linearly interpolated between evals (`half_gain_x`); none when the gain is ≤ 0;
- accuracy at the common budget: held-out accuracy interpolated at the smallest final compute/flops of all runs,
  so an arm that samples more per step (roc's oversampling) is read where the others are, not after more compute;
- final code ratio, tool-error share of executed code and response length, each the mean of the last two evals;
- wall seconds per step: compute/seconds at the last step divided by the last step;
- the final value (mean of the last two evals) of any other metric asked for (`extra`, e.g.
  eval/ood-wording/accuracy from `data.eval_extra`), as a column `final <metric>`.

Across seeds: the mean and a t-interval. Against the baseline arm: the difference of means with a Welch interval
and p-value; a difference counts only when its 95% interval excludes 0 ("within noise" otherwise). With 3 seeds
these intervals are wide; that is the honest answer, not a defect.

Arms are named after their study cells: a run dir `filter=roc,seed=1` belongs to arm `filter=roc`, `seed=0` to arm
`baseline` (the cell with nothing but a seed). Run dirs not named `...,seed=N` form an arm each.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zerotir.analysis.report import mean_ci, welch
from zerotir.analysis.runs import Group, Run

ACC, CODE, TOOL_ERR, LENGTH = "eval/accuracy", "eval/code_ratio", "eval/tool_error_rate", "eval/response_tokens"
FLOPS, SECONDS = "compute/flops", "compute/seconds"
BASELINE = "baseline"

COLUMNS: tuple[tuple[str, str], ...] = (
    ("final_accuracy", "final held-out accuracy"),
    ("accuracy_at_budget", "accuracy at the common FLOPs budget"),
    ("half_gain_flops", "FLOPs to half the gain"),
    ("code_ratio", "code ratio"),
    ("tool_error_share", "tool-error share of executed code"),
    ("response_tokens", "response tokens"),
    ("seconds_per_step", "wall s/step"),
)
"""(per-seed statistic, column title), in table order."""


def _extra_metrics(extra: tuple[str, ...]) -> list[str]:
    """The metrics of `extra` that COLUMNS does not already cover, once each, in order."""
    return [m for m in dict.fromkeys(extra) if m not in (ACC, CODE, TOOL_ERR, LENGTH)]


def columns(extra: tuple[str, ...] = ()) -> tuple[tuple[str, str], ...]:
    """COLUMNS plus a `final <metric>` column per extra metric that COLUMNS does not already cover."""
    return COLUMNS + tuple((f"final:{m}", f"final {m}") for m in _extra_metrics(extra))


def arm_name(run_name: str) -> str:
    """`filter=roc,seed=1` → `filter=roc`; `seed=0` → `baseline`; a name without a seed part is its own arm."""
    parts = [p for p in run_name.split(",") if not re.fullmatch(r"seed=\d+", p)]
    return ",".join(parts) if parts else BASELINE


def half_gain_x(x: np.ndarray, y: np.ndarray) -> float | None:
    """First x where y reaches y[0] + (final − y[0]) / 2, final = mean of the last two points; linear between points.

    x [n] increasing (x[0] is the start, e.g. compute 0 at the step-0 eval), y [n]. None when n < 2 or the gain is
    ≤ 0 (nothing to halve). Hand check: x = [0, 10, 20, 30], y = [0, 0.2, 0.6, 0.6] → final 0.6, target 0.3, crossed
    between 10 (0.2) and 20 (0.6) at 10 + 10·(0.1/0.4) = 12.5.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2:
        return None
    final = float(np.mean(y[-2:]))
    target = y[0] + (final - y[0]) / 2
    if final - y[0] <= 0:
        return None
    for i in range(1, len(y)):
        if y[i] >= target:
            if y[i] == y[i - 1]:
                return float(x[i])
            return float(x[i - 1] + (x[i] - x[i - 1]) * (target - y[i - 1]) / (y[i] - y[i - 1]))
    return None  # unreachable: the last two points average to final > target, so one of them is ≥ target


def _last_two(run: Run, metric: str) -> float | None:
    s = run.series.get(metric, {})
    if not s:
        return None
    steps = sorted(s)[-2:]
    return float(np.mean([s[k] for k in steps]))


def common_budget(runs: list[Run]) -> float | None:
    """The smallest final compute/flops over the runs that log it (the budget every run has reached)."""
    finals = [max(r.series[FLOPS].values()) for r in runs if r.series.get(FLOPS)]
    return min(finals) if finals else None


def seed_stats(run: Run, budget: float | None = None, extra: tuple[str, ...] = ()) -> dict[str, float | None]:
    """One run's row of statistics (the keys of `columns(extra)`); None where the run does not log what a statistic
    needs. `budget`: the compute/flops at which `accuracy_at_budget` is read (linear between evals)."""
    acc = run.series.get(ACC, {})
    flops = run.series.get(FLOPS, {})
    steps = sorted(k for k in acc if k in flops)
    xs, ys = np.array([flops[k] for k in steps]), np.array([acc[k] for k in steps])
    half = half_gain_x(xs, ys) if steps else None
    at_budget = float(np.interp(budget, xs, ys)) if steps and budget is not None and budget <= xs[-1] else None
    secs = run.series.get(SECONDS, {})
    last = max(secs) if secs else 0
    row = {"final_accuracy": _last_two(run, ACC), "accuracy_at_budget": at_budget, "half_gain_flops": half,
           "code_ratio": _last_two(run, CODE), "tool_error_share": _last_two(run, TOOL_ERR),
           "response_tokens": _last_two(run, LENGTH), "seconds_per_step": secs[last] / last if last > 0 else None}
    row.update({f"final:{m}": _last_two(run, m) for m in _extra_metrics(extra)})
    return row


def welch_diff(base: list[float], arm: list[float], level: float = 0.95) -> dict:
    """report.welch (difference of means arm − base, Welch p-value) plus its Welch–Satterthwaite interval; lo/hi
    None without 2 values a side, the point itself when neither side has any spread."""
    from scipy import stats

    w = welch(base, arm)
    d = w["diff"]
    if d is None or len(base) < 2 or len(arm) < 2:
        return {**w, "lo": None, "hi": None}
    va, vb = np.var(base, ddof=1) / len(base), np.var(arm, ddof=1) / len(arm)
    se = math.sqrt(va + vb)
    if se == 0:
        return {**w, "lo": d, "hi": d}
    df = (va + vb) ** 2 / ((va ** 2 / (len(base) - 1) if va else 0) + (vb ** 2 / (len(arm) - 1) if vb else 0))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return {**w, "lo": d - half, "hi": d + half}


@dataclass
class Arm:
    name: str
    runs: list[Run]
    per_seed: list[dict[str, float | None]] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [float(s[key]) for s in self.per_seed if s.get(key) is not None]


def group_arms(runs: list[Run], extra: tuple[str, ...] = ()) -> list[Arm]:
    """Runs grouped by arm name, baseline first, then in name order; each with its per-seed statistics."""
    arms: dict[str, Arm] = {}
    for r in sorted(runs, key=lambda r: r.name):
        arms.setdefault(arm_name(r.name), Arm(arm_name(r.name), [])).runs.append(r)
    budget = common_budget(runs)
    for a in arms.values():
        a.per_seed = [seed_stats(r, budget, extra) for r in a.runs]
    return sorted(arms.values(), key=lambda a: (a.name != BASELINE, a.name))


def arms_table(runs: list[Run], baseline: str = BASELINE, arms: list[Arm] | None = None,
               extra: tuple[str, ...] = ()) -> dict:
    """{'baseline', 'common_flops_budget', 'columns', 'arms': [{'name', 'n', 'seeds': [...], '<stat>': {'mean','lo',
    'hi'}, 'vs_baseline': {'<stat>': welch_diff + 'verdict'}}]} (`arms`: group_arms(runs, extra) when already
    computed; `extra`: metrics for `final <metric>` columns); raises ValueError naming the arms when `baseline` is
    not one of them."""
    arms = arms if arms is not None else group_arms(runs, extra)
    cols = columns(extra)
    names = [a.name for a in arms]
    if baseline not in names:
        raise ValueError(f"baseline arm {baseline!r} not among the arms: {', '.join(names) or 'none'}")
    base = arms[names.index(baseline)]
    out = []
    for a in arms:
        row: dict = {"name": a.name, "n": len(a.runs), "seeds": a.per_seed, "vs_baseline": {}}
        for key, _ in cols:
            m, lo, hi = mean_ci(a.values(key))
            row[key] = {"mean": m, "lo": lo, "hi": hi}
            if a is not base:
                w = welch_diff(base.values(key), a.values(key))
                sig = w["lo"] is not None and (w["lo"] > 0 or w["hi"] < 0)
                row["vs_baseline"][key] = {**w, "verdict": "differs" if sig else "within noise"}
        out.append(row)
    return {"baseline": baseline, "common_flops_budget": common_budget(runs), "columns": [list(c) for c in cols],
            "arms": out}


def _f(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def render_markdown(table: dict) -> str:
    """The arms table (mean [95% CI] per column) and the differences from the baseline (Δ [95% CI], verdict)."""
    cols = [tuple(c) for c in table["columns"]]
    lines = [f"Common budget: {_f(table.get('common_flops_budget'))} FLOPs.", "",
             "| arm | seeds | " + " | ".join(t for _, t in cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for a in table["arms"]:
        cells = []
        for key, _ in cols:
            c = a[key]
            ci = f" [{_f(c['lo'])}, {_f(c['hi'])}]" if c["lo"] is not None else ""
            cells.append(_f(c["mean"]) + ci)
        lines.append(f"| {a['name']} | {a['n']} | " + " | ".join(cells) + " |")
    lines += ["", f"Differences from `{table['baseline']}` (arm − baseline, Welch 95% interval; **bold** where the "
                  "interval excludes 0):", "",
              "| arm | " + " | ".join(t for _, t in cols) + " |", "|---|" + "---:|" * len(cols)]
    for a in table["arms"]:
        if not a["vs_baseline"]:
            continue
        cells = []
        for key, _ in cols:
            w = a["vs_baseline"][key]
            if w["diff"] is None:
                cells.append("–")
                continue
            txt = _f(w["diff"]) + (f" [{_f(w['lo'])}, {_f(w['hi'])}]" if w["lo"] is not None else "")
            cells.append(f"**{txt}**" if w["verdict"] == "differs" else txt)
        lines.append(f"| {a['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


PLOT_METRICS: tuple[str, ...] = (ACC, CODE, TOOL_ERR, LENGTH)
"""Metrics plotted by default, one figure each."""


def write_arms(runs: list[Run], out_dir: str | Path, baseline: str = BASELINE,
               plot_metrics: tuple[str, ...] = PLOT_METRICS) -> Path:
    """Write arms.md, arms.json and one plot per metric of `plot_metrics` (arms as seed bands vs step: every arm has
    the same steps, while its seeds' FLOPs differ, so bands are drawn on the step axis) into `out_dir`; metrics
    beyond the fixed columns get a `final <metric>` column too."""
    import json

    from zerotir.analysis.plots import plot_compare

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arms = group_arms(runs, plot_metrics)
    table = arms_table(runs, baseline, arms, plot_metrics)
    (out / "arms.json").write_text(json.dumps(table, indent=1))
    md = [f"# Arms vs `{baseline}`", "", render_markdown(table)]
    groups = [Group(label=a.name, runs=a.runs) for a in arms]
    for metric in plot_metrics:
        name = metric.replace("/", "_")
        plot_compare(groups, metric, out / f"arms_{name}.png", xlabel="step")
        md += ["", f"![{metric} by arm](arms_{name}.png)"]
    (out / "arms.md").write_text("\n".join(md) + "\n")
    return out / "arms.md"
