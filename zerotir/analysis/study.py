"""The analysis entry points of `zerotir study` (a study dir is STUDY/runs/<cell>/ run dirs, config.yaml +
metrics.jsonl each).

    analyze_study(study_dir, metrics=("eval/accuracy", "eval/code_ratio", "eval/response_tokens"),
                  x="compute/flops") -> Path
        Writes STUDY/fits.json, STUDY/report.md, STUDY/report.html and STUDY/plots/: per group (seeds of one
        config) and metric the sigmoid law with seed-bootstrap CIs, the compute extrapolation (first half of the
        compute → second half) against persistence / mean / best power law; per family (configs differing only in
        model size) the cross-size law in N and C with CIs and the size extrapolation (all sizes but the largest →
        the largest); plus the step-law fits, correlations and group comparisons of `report.analyze`, on axis x.
        If STUDY/predictions.json exists its predictions are scored ("scored" in fits.json, a report section).
        Returns the path of report.md.

    preregister(study_dir, held_out_runs, metrics=..., x="compute/flops") -> Path
        Fits the finished runs (metrics reach train.steps) other than `held_out_runs` and writes
        STUDY/predictions.json: time stamp, git revision of the zerotir code, the held-out run names, and per family
        and metric the cross-size law (parameters, CIs, bootstrap draws) with its predicted A, C_mid and curve on a
        compute grid at the held-out size. Call it before the held-out runs start. Returns its path.

The held-out size N is, in order: the `n_params` argument; the held-out runs' logged model/params (if any exist);
the model/params of another study run with the same model.path. When none is known, the law itself is registered
(fixed now) and evaluated at the measured N when scored; the file says so.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

import numpy as np

from zerotir.analysis import N_BOOT, heldout, sizes
from zerotir.analysis import sigmoid as sg
from zerotir.analysis.fits import _clean
from zerotir.analysis.lawfit import SIGMOID_METRICS, family_key, sigmoid_laws
from zerotir.analysis.runs import Run, group_runs, is_finished, load_run, run_params, xy_series

PREDICTIONS = "predictions.json"


def study_runs(study_dir: str | Path) -> list[Path]:
    """The run dirs of a study: STUDY/runs/<cell>/ holding metrics.jsonl, sorted by name."""
    root = Path(study_dir) / "runs"
    return sorted(d for d in root.iterdir() if (d / "metrics.jsonl").is_file()) if root.is_dir() else []


def analyze_study(study_dir, metrics=SIGMOID_METRICS, x: str = "compute/flops", n_boot: int = N_BOOT,
                  seed: int = 0) -> Path:
    """Analyse a whole study in place (see the module docstring); returns STUDY/report.md."""
    from zerotir.analysis.report import analyze, write_empty

    study = Path(study_dir)
    dirs = study_runs(study)
    if not dirs:
        return write_empty(study, f"{study / 'runs'}: no run directory with metrics.jsonl yet")
    analyze(dirs, study, metrics=tuple(metrics), n_boot=n_boot, seed=seed, x=x, sigmoid_metrics=tuple(metrics),
            predictions=study / PREDICTIONS)
    return study / "report.md"


def git_revision() -> str | None:
    """`git rev-parse HEAD` of the zerotir source tree, None outside a git checkout."""
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                           text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (r.stdout.strip() or None) if r.returncode == 0 else None


def _load_all(study: Path) -> tuple[list[Run], list[str]]:
    runs, notes = [], []
    for d in study_runs(study):
        try:
            runs.append(load_run(d))
        except (FileNotFoundError, OSError) as e:
            notes.append(str(e))
    return runs, notes


def _held_out_n(held: list[str], runs: list[Run], study: Path) -> tuple[float | None, str]:
    """N of the held-out size from their own metrics or from a study run with the same model.path."""
    cfgs = []
    for name in held:
        p = study / "runs" / name
        if (p / "metrics.jsonl").is_file():
            r = load_run(p)
            if run_params(r):
                return run_params(r), f"model/params of held-out run {name}"
            cfgs.append(r.config)
        elif (p / "config.yaml").is_file():
            from zerotir.analysis.runs import _load_config

            cfgs.append(_load_config(p / "config.yaml", []))
    paths = {c.get("model.path") for c in cfgs if c.get("model.path")}
    for r in runs:
        if r.name not in held and r.config.get("model.path") in paths and run_params(r):
            return run_params(r), f"model/params of {r.name} (same model.path)"
    return None, ""


def preregister(study_dir, held_out_runs: list[str], metrics=SIGMOID_METRICS, x: str = "compute/flops",
                n_boot: int = N_BOOT, seed: int = 0, n_params: float | None = None) -> Path:
    """Register size predictions for `held_out_runs` before they start (see the module docstring)."""
    study = Path(study_dir)
    held = list(held_out_runs)
    all_runs, notes = _load_all(study)
    train = [r for r in all_runs if r.name not in held and is_finished(r)]
    skipped = [r.name for r in all_runs if r.name not in held and not is_finished(r)]
    if skipped:
        notes.append(f"not finished, left out: {', '.join(skipped)}")
    n_big, n_src = (float(n_params), "given") if n_params else _held_out_n(held, all_runs, study)
    held_keys = set()
    for name in held:
        p = study / "runs" / name / "config.yaml"
        if p.is_file():
            from zerotir.analysis.runs import _load_config

            held_keys.add(family_key(_load_config(p, [])))
    laws = sigmoid_laws(train, metrics, x=x, n_boot=n_boot, seed=seed) if train else None
    entries = []
    for fam in (laws.families if laws else []):
        if held_keys and fam.key not in held_keys:
            continue
        for m, sf in fam.cross.items():
            e = {"family": fam.label, "family_key": fam.key, "metric": m, "ok": sf.ok, "note": sf.note,
                 "train_runs": [r.name for g in fam.groups for r in g.group.runs], "train_N": sf.sizes}
            if sf.ok:
                e.update(a_law=sf.a_law, params=sf.params, ci=sf.ci, formula=sf.formula, draws=sf.draws,
                         a_bounds=list(sf.a_bounds), N=n_big, N_source=n_src)
                top_g = [g for g in fam.groups if m in g.runs_xy][-1]
                c_max = max(float(c.max()) for c, _ in top_g.runs_xy[m])
                if n_big:
                    # The held-out size's compute range is unknown yet: scale the largest fitted size's by N.
                    top = c_max * n_big / top_g.n_params
                    grid = np.concatenate([[0.0], np.geomspace(top / 100, top, 25)])
                    e["predicted"] = sizes.predict_size(sf, n_big, grid)
                else:
                    e["note"] = ("held-out N unknown before the runs: the law above is registered and is "
                                 "evaluated at the measured N when scored")
            entries.append(e)
    if not entries:
        notes.append("no cross-size law could be fitted (need ≥ 2 finished sizes with model/params in a family)")
    doc = {"version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "git_revision": git_revision(), "x": x, "metrics": list(metrics), "held_out_runs": held,
           "fitted_runs": [r.name for r in train], "formula": sg.FORMULA, "predictions": entries, "notes": notes}
    path = study / PREDICTIONS
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_clean(doc), indent=1, default=str))
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def _size_fit_of(e: dict) -> sizes.SizeFit:
    lo, hi = (e.get("a_bounds") or [None, None])
    return sizes.SizeFit(ok=True, sizes=e.get("train_N", []), a_law=e["a_law"], params=e["params"],
                         ci=e.get("ci") or {}, draws=e.get("draws") or [],
                         a_bounds=(-math.inf if lo is None else lo, math.inf if hi is None else hi))


def _xy(runs: list[Run], metric: str, x: str) -> list[tuple]:
    out = []
    for r in runs:
        xs, ys, _ = xy_series(r, metric, x)
        if len(xs):
            out.append((xs, ys))
    return out


def same_family(key: str, registered: str | None) -> bool:
    """Family keys (JSON of a flat config) agree on every key both name. A config field added to the schema after
    the predictions were registered is in one key only and must not orphan them."""
    if registered is None:
        return False
    try:
        a, b = json.loads(key), json.loads(registered)
    except (TypeError, ValueError):
        return key == registered
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return key == registered
    return all(a[k] == b[k] for k in a.keys() & b.keys())


def score_predictions(doc: dict, runs: list[Run], n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Score a predictions.json document against the study's runs now. Held-out runs not there yet (or with no
    points on the axis) give a note, not an error."""
    x = doc.get("x", "compute/flops")
    by_name = {r.name: r for r in runs}
    held = [by_name[n] for n in doc.get("held_out_runs", []) if n in by_name]
    out = {k: doc.get(k) for k in ("created", "git_revision", "held_out_runs", "x")}
    out["entries"] = []
    missing = [n for n in doc.get("held_out_runs", []) if n not in by_name]
    out["note"] = f"held-out run(s) not in the study yet: {', '.join(missing)}" if missing else ""
    for e in doc.get("predictions", []):
        s = {"family": e.get("family"), "metric": e.get("metric"), "note": ""}
        out["entries"].append(s)
        if not e.get("ok"):
            s["note"] = f"nothing was predicted: {e.get('note')}"
            continue
        mine = [r for r in held if r.config and same_family(family_key(r.config), e.get("family_key"))]
        if not mine:
            s["note"] = "no held-out run of this family in the study yet"
            continue
        ns = [n for n in (run_params(r) for r in mine) if n]
        if not ns:
            s["note"] = "held-out runs log no model/params: N unknown"
            continue
        n = float(np.median(ns))
        s["N_measured"], s["N_preregistered"] = n, e.get("N")
        if e.get("N") and not math.isclose(e["N"], n, rel_tol=1e-6):
            s["note"] = f"registered for N = {e['N']:.4g}, measured N = {n:.4g}: the registered law is evaluated at N"
        xy = _xy(mine, e["metric"], x)
        if not xy:
            s["note"] = f"held-out runs have no {e['metric']} on {x} yet"
            continue
        fit = sg.fit_runs(xy, n_boot=n_boot, seed=seed, a_bounds=_size_fit_of(e).a_bounds)
        train_runs = [by_name[k] for k in e.get("train_runs", []) if k in by_name]
        train = []
        for g in group_runs(train_runs):
            gn = [v for v in (run_params(r) for r in g.runs) if v]
            gxy = _xy(g.runs, e["metric"], x)
            if gn and gxy:
                train.append((float(np.median(gn)), gxy, None))
        sf = _size_fit_of(e)
        s["score"] = heldout.score_size(lambda nn, grid, sf=sf: sizes.predict_size(sf, nn, grid), n, xy, fit, train)
    return _clean(out)


def score_file(path: str | Path, runs: list[Run], n_boot: int = N_BOOT, seed: int = 0) -> dict | None:
    """`score_predictions` of a predictions.json file; None when there is none, a note when it is unreadable."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        doc = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return {"entries": [], "note": f"{p}: unreadable ({e}); nothing scored"}
    if not isinstance(doc, dict):
        return {"entries": [], "note": f"{p}: not a JSON object; nothing scored"}
    return score_predictions(doc, runs, n_boot, seed)
