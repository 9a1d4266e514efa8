"""The scaling report: load runs → group seeds → fit laws per group and metric → correlations → plots → files.

    from zerotir.analysis.report import analyze
    out = analyze(["runs/tools-s0", "runs/tools-s1", "runs/notools-s0"], "report")   # → Path("report")

`out` then holds report.md (plots linked from plots/), report.html (self-contained, plots embedded), fits.json
(machine-readable: every fit, CI, held-out and extrapolation error, correlation, note) and plots/*.png.
Short, constant, noisy or missing series never stop the report: each one becomes a note.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from zerotir.analysis import N_BOOT
from zerotir.analysis.correlations import correlation_table
from zerotir.analysis.fits import LAWS, MIN_POINTS, SeriesFit, _clean, clean_xy, fit_law, fit_series
from zerotir.analysis.lawfit import sigmoid_laws
from zerotir.analysis.lawreport import law_blocks, scored_blocks
from zerotir.analysis.render import to_html, to_markdown
from zerotir.analysis.report_tables import _fmt, _fmt_p, _group_blocks, _headline_blocks
from zerotir.analysis.runs import IGNORED_KEYS, Group, Run, group_band, group_runs, load_run, pooled_points, rekey
from zerotir.analysis.study import score_file

DEFAULT_METRICS: tuple[str, ...] = (
    "eval/accuracy", "eval/code_ratio", "eval/tool_calls_per_response", "eval/response_tokens",
    "reward/accuracy", "rollout/code_ratio", "rollout/tool_calls_per_response", "rollout/response_tokens",
    "loss/entropy",
)
"""Metrics analysed by default (in report order); eval/<benchmark>/accuracy series found in the runs are added."""



def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    """Each path is a run dir (has metrics.jsonl) or a folder of run dirs (its subfolders with metrics.jsonl)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "metrics.jsonl").is_file():
            out.append(p)
            continue
        subs = sorted(d for d in p.iterdir() if (d / "metrics.jsonl").is_file()) if p.is_dir() else []
        if not subs:
            raise FileNotFoundError(f"{p}: not a run directory (no metrics.jsonl) and holds no run directories")
        out.extend(subs)
    return out


def _metrics_to_analyse(runs: list[Run], metrics: tuple[str, ...] | None) -> list[str]:
    if metrics:
        return list(metrics)
    present = {k for r in runs for k in r.series}
    bench = sorted(k for k in present if re.fullmatch(r"eval/[^/]+/accuracy", k))
    return list(DEFAULT_METRICS) + bench


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:80] or "x"


def horizon(runs: list[Run], metric: str) -> float | None:
    """The last step every run that logs `metric` has reached: 'final' values are compared there, so a run still
    going (or a shorter one) is not compared with a longer one at different points of training."""
    last = [max(r.series[metric]) for r in runs if r.series.get(metric)]
    return min(last) if last else None


def final_per_seed(group: Group, metric: str, upto: float | None = None) -> list[float]:
    """Each seed's average over its last 10% of logged steps up to step `upto` (at least the last one)."""
    per = []
    for r in group.runs:
        s = r.series.get(metric)
        if not s:
            continue
        steps = sorted(k for k in s if upto is None or k <= upto)
        if not steps:
            continue
        tail = steps[-max(1, len(steps) // 10):]
        per.append(float(np.mean([s[k] for k in tail])))
    return per


def welch(a: list[float], b: list[float]) -> dict:
    """Difference of means b − a with Welch's t-test p-value (None when either side has < 2 seeds or no spread)."""
    from scipy import stats

    if not a or not b:
        return {"diff": None, "p": None}
    d = float(np.mean(b) - np.mean(a))
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return {"diff": d, "p": None}
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = float(stats.ttest_ind(b, a, equal_var=False).pvalue)
    # nearly identical values: scipy warns of catastrophic cancellation and its p-value is noise, so none is given
    unreliable = any("Precision loss" in str(w.message) for w in caught)
    return {"diff": d, "p": p if math.isfinite(p) and not unreliable else None}


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """(mean, lo, hi) over seeds with a t-interval; lo/hi None below 2 values, all None for none."""
    from scipy import stats

    if not values:
        return None, None, None
    m = float(np.mean(values))
    if len(values) < 2:
        return m, None, None
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))
    return m, m - half, m + half


def final_value(group: Group, metric: str, upto: float | None = None) -> dict:
    """Across-seed mean and 95% CI of each seed's last-10%-of-steps average up to step `upto`."""
    per = final_per_seed(group, metric, upto)
    m, lo, hi = mean_ci(per)
    return {"n": len(per), "mean": m, "lo": lo, "hi": hi}


def per_seed_fits(group: Group, metric: str, sf: SeriesFit) -> dict[str, dict[str, float] | None]:
    """The chosen law refitted to each seed alone ({run name: params or None}): seed-to-seed spread, which the
    residual bootstrap of the pooled fit does not see. Empty for single-run groups or when no law was chosen."""
    if sf.best is None or len(group.runs) < 2:
        return {}
    out: dict[str, dict[str, float] | None] = {}
    for r in group.runs:
        s = r.series.get(metric, {})
        x, y, _ = clean_xy(np.array(list(s), dtype=float) + sf.x_offset, np.array(list(s.values()), dtype=float))
        p = fit_law(x, y, sf.best) if len(x) >= MIN_POINTS else None
        out[r.name] = None if p is None else {k: float(v) for k, v in zip(LAWS[sf.best].param_names, p)}
    return out


def analyze(run_dirs: list[str | Path], out_dir: str | Path, metrics: tuple[str, ...] | None = None,
            n_boot: int = N_BOOT, seed: int = 0, ignore: tuple[str, ...] = IGNORED_KEYS,
            x_offset: float | None = None, x: str = "step", sigmoid_metrics: tuple[str, ...] | None = None,
            predictions: str | Path | None = None) -> Path:
    """Write the scaling report for `run_dirs` (run dirs or folders of them) into `out_dir`; returns `out_dir`.

    `x` is the axis: 'step' or a cumulative metric logged on every row ('compute/flops', 'compute/tokens', ...);
    every series is re-keyed by it. The sigmoid section (`lawfit`) covers `sigmoid_metrics` (default
    `lawfit.SIGMOID_METRICS`); a `predictions` file (predictions.json of a study), when it exists, is scored.

    The laws take x = step + x_offset. None chooses, per metric, 0, or 1 when any run has that metric at step 0 (the
    base model evaluated before RL, as `zerotir demo` writes), so that point is fitted too; the same offset serves
    every group of a metric, so their parameters compare."""
    t0 = time.time()
    out = Path(out_dir)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    dirs = find_run_dirs(run_dirs)
    if not dirs:
        raise ValueError("no run directories given")
    raw = [load_run(d) for d in dirs]
    runs = [rekey(r, x) for r in raw]  # every series keyed by the axis (unchanged for 'step')
    groups = group_runs(runs, ignore)
    names = _metrics_to_analyse(runs, metrics)
    notes: list[str] = [n for r in runs for n in r.notes]
    missing = [m for m in names if not any(m in r.series for r in runs)]
    if missing:
        notes.append(f"metric(s) in no run, skipped: {', '.join(missing)}")
    present = [m for m in names if m not in missing]
    offsets = {m: (float(x_offset) if x_offset is not None else
                   1.0 if min((k for r in runs for k in r.series.get(m, {})), default=1.0) <= 0 else 0.0)
               for m in present}
    horizons = {m: horizon(runs, m) for m in present}
    shifted = [m for m in present if offsets[m]]
    x_desc = "x = training step" if x == "step" else f"x = {x}"
    if shifted:
        x_desc += (f"; x = {x} + {offsets[shifted[0]]:g} for {', '.join(shifted)}"
                   + (", which have step-0 rows (the model before RL)" if x_offset is None else ""))

    blocks: list[tuple] = [("h", 1, "zerotir scaling report"),
                           ("p", f"{len(runs)} run(s) in {len(groups)} group(s); laws: "
                                 + "; ".join(f"{n}: {L.formula}" for n, L in LAWS.items())
                                 + f". Bootstrap resamples: {n_boot}. Laws are fitted to all seeds' points of a group "
                                   f"({x_desc}); the chosen law has the lowest 5-fold held-out RMSE "
                                   "(the simplest within 1%) and must beat the constant mean; the extrapolation "
                                   "check fits the first 70% of the x range and predicts the rest. CIs come from "
                                   "a residual bootstrap, which treats residuals as independent: with correlated "
                                   "step-to-step noise they are optimistic.")]
    group_of = {id(r): g.label for g in groups for r in g.runs}
    blocks += [("h", 2, "Runs"),
               ("table", ["run", "group", "seed", "rows", "last step"],
                [[r.name, group_of[id(r)], _fmt(r.config.get("train.seed")), r.n_rows,
                  _fmt(max((max(s) for s in r.series.values() if s), default=None))] for r in runs])]

    laws = sigmoid_laws(raw, sigmoid_metrics, x=x, n_boot=n_boot, seed=seed, ignore=ignore)
    blocks += law_blocks(laws, plots, out)
    scored = score_file(predictions, raw, n_boot=n_boot, seed=seed) if predictions else None
    if scored is not None:
        blocks += scored_blocks(scored)
    result: dict[str, Any] = {"version": 1, "x": x, "sigmoid": laws.to_dict(), "scored": scored, "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "laws": {n: {"formula": L.formula, "params": list(L.param_names)}
                                       for n, L in LAWS.items()},
                              "n_boot": n_boot, "seed": seed, "metrics": present, "x_offset": offsets,
                              "runs": [{"path": str(r.path), "name": r.name, "group": group_of[id(r)],
                                        "seed": r.config.get("train.seed"), "rows": r.n_rows, "notes": r.notes}
                                       for r in runs],
                              "groups": [], "notes": notes}

    # Fits and correlations per group.
    fitted: dict[str, dict[str, SeriesFit]] = {}
    # Correlations pair metrics at the same training step: on a compute axis each seed reaches different x values,
    # so the step-keyed runs (same grouping: it depends on configs only) are used for them.
    step_groups = {g.label: g for g in group_runs(raw, ignore)}
    for gi, g in enumerate(groups):
        gres: dict[str, Any] = {"label": g.label, "runs": [r.name for r in g.runs], "seeds": g.seeds,
                                "differs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.differs.items()},
                                "metrics": {}, "correlations": []}
        fitted[g.label] = {}
        panels = []
        for m in present:
            x, y = pooled_points(g, m)
            if len(x) == 0:
                gres["metrics"][m] = {"n": 0, "note": "metric missing in this group", "fits": {}}
                continue
            sf = fit_series(x, y, n_boot=n_boot, seed=seed, x_offset=offsets[m])
            fitted[g.label][m] = sf
            gres["metrics"][m] = {**sf.to_dict(), "final": {**final_value(g, m, horizons[m]), "at_step": horizons[m]}, "per_seed": per_seed_fits(g, m, sf)}
            panels.append((m, x, y, sf))
        # Group-mean series on the steps every seed has reached: where seeds drop out the mean jumps in every metric
        # at once, which would pass for a correlated change.
        means = {}
        gs = step_groups.get(g.label, g)
        for m in present:
            b = group_band(gs, m)
            full = b["n"] == b["n"].max() if len(b["n"]) else b["n"] > 0
            if full.any():
                means[m] = dict(zip(b["step"][full].tolist(), b["mean"][full].tolist()))
        gres["correlations"] = correlation_table(means, [m for m in present if m in means])
        if len(g.runs) > 1:
            gres["per_run_correlations"] = {r.name: correlation_table(r.series, [m for m in present if m in r.series])
                                            for r in gs.runs}
        result["groups"].append(gres)
        g_slug = f"g{gi}_{_slug(g.label)}"
        if panels:
            plot_fits_path = _plot_fits(panels, g, plots / f"fits_{g_slug}.png", x)
            gres["plot_fits"] = str(plot_fits_path.relative_to(out))
        if len(means) >= 2:
            from zerotir.analysis.plots import plot_correlations

            p = plot_correlations(gres["correlations"], list(means), f"{g.label}: correlations of group-mean series",
                                  plots / f"corr_{g_slug}.png")
            gres["plot_corr"] = str(p.relative_to(out))

    blocks += _headline_blocks(groups, fitted, result)
    blocks += _comparison_blocks(groups, present, plots, out, result)
    for g, gres in zip(groups, result["groups"]):
        blocks += _group_blocks(g, gres, present)
    if notes:
        blocks += [("h", 2, "Notes")] + [("note", n) for n in notes]
    blocks.append(("p", f"Generated {result['generated']} in {time.time() - t0:.1f} s by `zerotir analyze`."))

    (out / "fits.json").write_text(json.dumps(_clean(result), indent=1, default=str))
    (out / "report.md").write_text(to_markdown(blocks))
    (out / "report.html").write_text(to_html(blocks, out, "zerotir scaling report"))
    return out


def write_empty(out_dir: str | Path, note: str) -> Path:
    """A report with nothing to fit (no runs yet): the note in report.md/.html and fits.json; returns report.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blocks = [("h", 1, "zerotir scaling report"), ("note", note)]
    (out / "fits.json").write_text(json.dumps({"version": 1, "groups": [], "notes": [note]}, indent=1))
    (out / "report.md").write_text(to_markdown(blocks))
    (out / "report.html").write_text(to_html(blocks, out, "zerotir scaling report"))
    return out / "report.md"


def _plot_fits(panels, g: Group, path: Path, x: str) -> Path:
    from zerotir.analysis.plots import plot_fits

    return plot_fits(panels, f"{g.label} — {len(g.runs)} run(s): fitted laws", path, xlabel=x)


def _comparison_blocks(groups: list[Group], present: list[str], plots: Path, out: Path,
                       result: dict) -> list[tuple]:
    from zerotir.analysis.plots import plot_compare

    blocks: list[tuple] = [("h", 2, "Groups compared")]
    diff_keys = sorted({k for g in groups for k in g.differs})
    blocks.append(("p", ("Groups differ in: " + ", ".join(f"`{k}`" for k in diff_keys)) if diff_keys
                   else "A single configuration (seeds only)."))
    rows = []
    all_runs = [r for g in groups for r in g.runs]
    for m in present:
        upto = horizon(all_runs, m)
        cells = [_fmt(upto)]
        for g in groups:
            f = final_value(g, m, upto)
            ci = f" [{_fmt(f['lo'])}, {_fmt(f['hi'])}]" if f["lo"] is not None else ""
            cells.append(f"{_fmt(f['mean'])}{ci}" if f["n"] else "–")
        ref = final_per_seed(groups[0], m, upto)
        for g in groups[1:]:
            w = welch(ref, final_per_seed(g, m, upto))
            result.setdefault("differences", []).append({"metric": m, "group": g.label, "vs": groups[0].label,
                                                         "at_step": upto, **w})
            cells.append(f"{_fmt(w['diff'])} (p {_fmt_p(w['p'])})" if w["diff"] is not None else "–")
        rows.append([m] + cells)
    blocks.append(("p", "Final value per group at the common horizon (the last step every run has reached): mean "
                        "over seeds of each seed's last-10%-of-steps average up to that step, 95% CI across seeds "
                        "where there are ≥ 2. Δ columns: difference from the first group, Welch t-test p-value over "
                        "seeds."))
    blocks.append(("table", ["metric", "at step"] + [f"{g.label} (n={len(g.runs)})" for g in groups]
                   + [f"Δ {g.label}" for g in groups[1:]], rows))
    result["compare_plots"] = {}
    for m in present:
        p = plot_compare(groups, m, plots / f"compare_{_slug(m)}.png", xlabel=result.get("x", "step"))
        rel = str(p.relative_to(out))
        result["compare_plots"][m] = rel
        blocks.append(("img", rel, f"{m} by group"))
    return blocks


