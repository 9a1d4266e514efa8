"""`zerotir analyze RUN_DIR [RUN_DIR ...] [--out REPORT_DIR] [--x compute/flops]`: fit scaling laws to runs and write
the report."""

from __future__ import annotations

from typing import Optional

import typer

from zerotir.analysis import N_BOOT
from zerotir.cli_common import fail


def default_report_dir(run_dirs: list[str]) -> str:
    """Where a report goes when --out is not given: inside the run for one run directory (as `zerotir demo` does),
    else next to training runs; never the current directory's top level."""
    import time
    from pathlib import Path

    if len(run_dirs) == 1 and (Path(run_dirs[0]) / "metrics.jsonl").is_file():
        return str(Path(run_dirs[0]) / "analysis")
    return str(Path("runs") / f"analysis-{time.strftime('%Y%m%d-%H%M%S')}")


def analyze_command(
    run_dirs: list[str] = typer.Argument(..., help="Run directories (or folders of run directories)."),
    out: str = typer.Option("", "--out", "-o", help="Report directory (created). Default: RUN_DIR/analysis for one "
                                                     "run directory, else runs/analysis-<time>."),
    bootstrap: int = typer.Option(N_BOOT, "--bootstrap", help="Bootstrap resamples for the 95% CIs (0 = no CIs)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and cross-validation folds."),
    metric: list[str] = typer.Option([], "--metric", "-m",
                                     help="Metric to analyse (repeatable; default: accuracy, code use, length, "
                                          "entropy, train and eval)."),
    x_offset: Optional[float] = typer.Option(None, "--x-offset",
                                   help="Fit laws in x = step + OFFSET (default: 1 if a run has step-0 rows, else 0)."),
    x: str = typer.Option("step", "--x",
                          help="x axis: step, compute/flops, compute/tokens, compute/seconds, compute/cpu_seconds "
                               "(any cumulative metric on every row)."),
    sigmoid_metric: list[str] = typer.Option([], "--sigmoid-metric",
                                             help="Metric given the sigmoid law (repeatable; default: eval "
                                                  "accuracy, code ratio, response tokens)."),
    ignore_key: list[str] = typer.Option([], "--ignore-key",
                                         help="Extra config key that does not split groups (repeatable; "
                                              "'section.*' for a whole section)."),
    arms: str = typer.Option("", "--arms",
                             help="Write the ablation arms table against this baseline arm (e.g. 'baseline': the "
                                  "study cell with only a seed) instead of the laws report: arms.md, arms.json, "
                                  "one plot per --metric (default: eval accuracy, code ratio, tool errors, "
                                  "length)."),
) -> None:
    """Fit power / saturating / log-linear laws and the sigmoid law (with seed-bootstrap CIs, across model sizes,
    with held-out extrapolation tests) to metrics vs step or compute, correlate metrics, compare seed groups."""
    import json

    from zerotir.analysis.report import analyze
    from zerotir.analysis.runs import IGNORED_KEYS

    if bootstrap < 0:
        fail("--bootstrap must be ≥ 0")
    out = out or default_report_dir(run_dirs)
    if arms:
        _write_arms(run_dirs, out, arms, tuple(metric))
        return
    try:
        path = analyze(run_dirs, out, metrics=tuple(metric) or None, n_boot=bootstrap, seed=seed,
                       ignore=IGNORED_KEYS + tuple(ignore_key), x_offset=x_offset, x=x,
                       sigmoid_metrics=tuple(sigmoid_metric) or None)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        fail(str(e))
        return
    res = json.loads((path / "fits.json").read_text())
    for h in res.get("headline", []):
        params = ", ".join(f"{k}={v:.3g}" for k, v in h["params"].items())
        typer.echo(f"{h['group']:<40} {h['metric']:<26} {h['law']:<11} {params}")
    for fam in res.get("sigmoid", {}).get("families", []):
        for m, v in fam["metrics"].items():
            if v["cross_size"].get("formula"):
                typer.echo(f"{fam['label']:<40} {m:<26} {v['cross_size']['formula']}")
    typer.echo(f"report: {path / 'report.html'}  ({path / 'report.md'}, {path / 'fits.json'})")


def _write_arms(run_dirs: list[str], out: str, baseline: str, metrics: tuple[str, ...]) -> None:
    from zerotir.analysis.arms import PLOT_METRICS, write_arms
    from zerotir.analysis.report import find_run_dirs
    from zerotir.analysis.runs import load_run

    try:
        runs = [load_run(d) for d in find_run_dirs(run_dirs)]
        path = write_arms(runs, out, baseline, metrics or PLOT_METRICS)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        fail(str(e))
        return
    typer.echo(path.read_text().split("\n\n![")[0])
    typer.echo(f"arms table: {path}  ({path.parent / 'arms.json'})")
