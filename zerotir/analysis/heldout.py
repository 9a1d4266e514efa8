"""Predictions that can fail: the sigmoid law against naive baselines on data it was not fitted to. Pure, no I/O.

Compute extrapolation (`compute_extrapolation`): a group's runs are fitted on the points with C ≤ half of the
largest compute reached, and predict the points beyond. Size extrapolation (`size_extrapolation`): the cross-size
law fitted on every size but the largest predicts the largest size's A, C_mid and whole curve.

Baselines, each given exactly the data the law was given:
    persistence   the last value seen (mean over the runs of each run's last fitted point; for sizes: the
                  next-largest size's seed-mean curve, held flat beyond its compute range)
    mean          the mean of every point the law was fitted to
    power law     compute: the best of `fits.LAWS` (power, saturating, log-linear in C) by cross-validation on the
                  fitted part; sizes: y = a·N^b·C^g (least squares in logs, points with y > 0 and C > 0)
Errors are RMSE over the held-out points with C > 0 (the same points for every predictor).
"""

from __future__ import annotations

import math

import numpy as np

from zerotir.analysis import sigmoid as sg
from zerotir.analysis import sizes as sz
from zerotir.analysis.fits import LAWS, _clean, fit_series
from zerotir.analysis.fits import predict as law_predict


def rmse(pred, y) -> float:
    """Root mean squared error; NaN when empty or any prediction is not finite."""
    pred, y = np.asarray(pred, dtype=float), np.asarray(y, dtype=float)
    if len(y) == 0 or not np.all(np.isfinite(pred)):
        return float("nan")
    return float(np.sqrt(np.mean((pred - y) ** 2)))


def _pool(runs):
    if not runs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate([np.asarray(r[0], float) for r in runs]), np.concatenate([np.asarray(r[1], float)
                                                                                      for r in runs])


def best_power_law(x, y, seed: int = 0) -> tuple[str | None, dict[str, float], str]:
    """The law of `fits.LAWS` (in x > 0) with the lowest 5-fold held-out RMSE on (x, y), its params and a note."""
    sf = fit_series(x, y, n_boot=0, seed=seed)
    ok = [(f.cv_rmse, n) for n, f in sf.fits.items() if f.ok and math.isfinite(f.cv_rmse)]
    if not ok:
        return None, {}, sf.note or "no power-type law converged"
    _, name = min(ok)
    return name, sf.fits[name].params, sf.note


def compute_extrapolation(runs: list[tuple], frac: float = 0.5, seed: int = 0,
                          a_bounds=(-math.inf, math.inf)) -> dict:
    """Fit on C ≤ frac·max C of a group's runs [(c [n], y [n]), ...], predict C beyond; errors vs baselines."""
    runs = [(np.asarray(c, float), np.asarray(y, float)) for c, y in runs]
    c_all, y_all = _pool(runs)
    fin = np.isfinite(c_all) & np.isfinite(y_all)
    out: dict = {"frac": frac, "cut": None, "n_fit": 0, "n_test": 0, "errors": {}, "note": ""}
    if not fin.any():
        out["note"] = "no finite points"
        return out
    cut = frac * float(c_all[fin].max())
    out["cut"] = cut
    fit_runs = [(c[(c <= cut) & np.isfinite(y)], y[(c <= cut) & np.isfinite(y)]) for c, y in runs]
    fit_runs = [r for r in fit_runs if len(r[0])]
    cf, yf = _pool(fit_runs)
    test = fin & (c_all > cut)
    ct, yt = c_all[test], y_all[test]
    out["n_fit"], out["n_test"] = int(len(cf)), int(len(ct))
    if len(ct) == 0 or int((cf > 0).sum()) < sg.MIN_POINTS:
        out["note"] = (f"too few points to split at {frac:.0%} of the compute: {int((cf > 0).sum())} with C > 0 "
                       f"before, {len(ct)} after")
        return out
    notes = []
    fit = sg.fit_runs(fit_runs, n_boot=0, a_bounds=a_bounds)
    errs = out["errors"]
    if fit.ok:
        out["sigmoid_params"] = fit.params
        errs["sigmoid"] = rmse(sg.predict(fit.params, ct), yt)
    else:
        notes.append(f"sigmoid on the first part: {fit.note}")
    errs["persistence"] = rmse(np.full(len(yt), np.mean([y[np.argmax(c)] for c, y in fit_runs])), yt)
    errs["mean"] = rmse(np.full(len(yt), yf.mean()), yt)
    name, params, note = best_power_law(cf, yf, seed)
    if name:
        out["power_law"] = {"law": name, "formula": LAWS[name].formula, "params": params}
        errs["power_law"] = rmse(law_predict(name, params, ct), yt)
    else:
        notes.append(f"power law on the first part: {note}")
    out["winner"] = _winner(errs)
    out["note"] = "; ".join(notes)
    return _clean(out)


def _winner(errs: dict) -> str | None:
    ok = {k: v for k, v in errs.items() if v is not None and math.isfinite(v)}
    return min(ok, key=ok.get) if ok else None


def _persistence_curve(runs, c):
    """The seed-mean curve of `runs` interpolated at c, held flat outside its compute range: points pooled and sorted
    by C, then a rolling mean over as many points as there are runs (the seeds' values at about the same step)."""
    from zerotir.analysis.fits import rolling_mean

    x, y = _pool(runs)
    fin = np.isfinite(x) & np.isfinite(y)
    order = np.argsort(x[fin], kind="stable")
    xs, ys = x[fin][order], y[fin][order]
    if len(xs) == 0:
        return np.full(len(c), np.nan)
    return np.interp(c, xs, rolling_mean(ys, max(1, len(runs))))


def power_nc(ns, cs, ys) -> dict[str, float] | None:
    """y = a·N^b·C^g by least squares of log y on (1, log N, log C), points with y > 0, C > 0, N > 0."""
    ns, cs, ys = (np.asarray(v, dtype=float) for v in (ns, cs, ys))
    keep = (ys > 0) & (cs > 0) & (ns > 0) & np.isfinite(ys) & np.isfinite(cs)
    if keep.sum() < 4:
        return None
    X = np.stack([np.ones(keep.sum()), np.log(ns[keep]), np.log(cs[keep])], axis=1)
    coef, *_ = np.linalg.lstsq(X, np.log(ys[keep]), rcond=None)
    return {"a": float(math.exp(coef[0])), "b": float(coef[1]), "g": float(coef[2])}


def size_extrapolation(sizes: list[tuple[float, list[tuple], sg.SigmoidFit]], a_bounds=(-math.inf, math.inf)) -> dict:
    """Hold out the largest size: fit the cross-size law on the rest and predict it.

    sizes: [(N, runs [(c, y), ...], that size's SigmoidFit)], any order. Returns the prediction (A, C_mid with
    bootstrap CIs, curve), the largest size's own fit, and RMSE over its points vs the baselines."""
    sizes = sorted((s for s in sizes if s[0] and math.isfinite(s[0])), key=lambda s: s[0])
    if len({s[0] for s in sizes}) < 3:
        return {"errors": {}, "note": f"{len(sizes)} size(s): size extrapolation needs ≥ 3 (≥ 2 to fit, 1 to predict)"}
    *train, (n_big, runs_big, fit_big) = sizes
    cross = sz.fit_sizes([s[0] for s in train], [s[2] for s in train], a_bounds)
    if not cross.ok:
        return {"errors": {}, "held_out_N": n_big, "cross": cross.to_dict(),
                "note": f"cross-size fit on the smaller sizes failed: {cross.note}"}
    out = score_size(lambda n, grid: sz.predict_size(cross, n, grid), n_big, runs_big, fit_big, train)
    out["cross"] = cross.to_dict()
    return out


def score_size(predict_at, n_big: float, runs_big: list[tuple], fit_big: sg.SigmoidFit,
               train: list[tuple[float, list[tuple], sg.SigmoidFit]]) -> dict:
    """Score a size prediction: `predict_at(N, c_grid)` → `sizes.predict_size`-style dict, against the held-out
    size's points (runs_big) and own fit (fit_big); baselines from `train` [(N, runs, fit)], ascending N."""
    train = sorted(train, key=lambda s: s[0])
    out: dict = {"errors": {}, "note": "", "held_out_N": n_big, "train_N": [s[0] for s in train]}
    c, y = _pool(runs_big)
    test = np.isfinite(c) & np.isfinite(y) & (c > 0)
    ct, yt = c[test], y[test]
    out["n_test"] = int(len(ct))
    grid = np.concatenate([[0.0], np.geomspace(ct.min(), ct.max(), 24)]) if len(ct) else np.zeros(1)
    pred = predict_at(n_big, grid)
    out["predicted"] = pred
    out["actual"] = fit_big.to_dict()
    if len(ct) == 0:
        out["note"] = "the held-out size has no points with C > 0"
        return _clean(out)
    errs = out["errors"]
    errs["sigmoid"] = rmse(sg.predict(pred["params"], ct), yt)
    if train:
        errs["persistence"] = rmse(_persistence_curve(train[-1][1], ct), yt)
        all_c, all_y = _pool([r for s in train for r in s[1]])
        errs["mean"] = rmse(np.full(len(yt), np.nanmean(all_y)), yt)
        ns = np.concatenate([np.full(len(r[0]), s[0]) for s in train for r in s[1]])
        pl = power_nc(ns, all_c, all_y)
        if pl:
            out["power_law"] = {"formula": "y = a·N^b·C^g", "params": pl}
            errs["power_law"] = rmse(pl["a"] * n_big ** pl["b"] * ct ** pl["g"], yt)
    if fit_big.ok:
        p = pred["params"]
        out["A_error"] = p["A"] - fit_big.params["A"]
        out["C_mid_ratio"] = p["C_mid"] / fit_big.params["C_mid"]
    out["winner"] = _winner(errs)
    return _clean(out)
