"""Curve laws for "metric vs training step", fitted with scipy, with bootstrap CIs, held-out model choice and an
extrapolation check. Pure functions on 1-D numpy arrays; nothing here reads files or plots.

Laws (x = training step, x > 0), registered by name in `LAWS`:
    power        y = a · x^b
    saturating   y = c − a · x^(−b)        (b > 0: approaches the ceiling c)
    loglinear    y = a + b · log x

    res = fit_series(x, y, n_boot=200, seed=0)
    res.fits["saturating"].params, res.fits["saturating"].ci, res.best, res.note

Invariants: every public function returns (never raises) on short, constant or non-finite input; the reason is in
`note`. Bootstrap is a residual bootstrap (the x design is kept, residuals of the full fit are resampled), seeded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import optimize

from zerotir.analysis import N_BOOT

MIN_POINTS = 5
"""Fewer points than this → no fit, a note instead."""
WEAK_R2 = 0.2
"""A chosen law explaining less variance than this gets a 'weak trend' note."""


@dataclass(frozen=True)
class Law:
    """A law linear in all parameters but (at most) one exponent b: y = design(x, b) @ linear_params.

    Fitting profiles the exponent out (variable projection): for each b the linear parameters are a least-squares
    solve, and b minimises the remaining squared error over `b_range` (grid, then bounded Brent refinement). This is
    deterministic, needs no starting guess, and cannot diverge.
    """

    name: str
    formula: str
    param_names: tuple[str, ...]
    """Linear parameters first (in design-column order), then the exponent (if any)."""
    fn: Callable[..., np.ndarray]
    design: Callable[[np.ndarray, float], np.ndarray]
    """(x [N], b) → design matrix [N, k] for the k linear parameters."""
    b_range: tuple[float, float] | None
    """Exponent search interval; None when the law is linear in every parameter."""
    b_log_grid: bool = False
    """Search b on a log grid (b > 0) rather than a linear one."""


def _power(x, a, b):
    return a * np.power(x, b)


def _saturating(x, c, a, b):
    return c - a * np.power(x, -b)


def _loglinear(x, a, b):
    return a + b * np.log(x)


LAWS: dict[str, Law] = {
    "power": Law("power", "y = a·x^b", ("a", "b"), _power,
                 lambda x, b: np.power(x, b)[:, None], (-5.0, 5.0)),
    "saturating": Law("saturating", "y = c − a·x^(−b)", ("c", "a", "b"), _saturating,
                      lambda x, b: np.stack([np.ones_like(x), -np.power(x, -b)], axis=1), (1e-3, 10.0),
                      b_log_grid=True),
    "loglinear": Law("loglinear", "y = a + b·log x", ("a", "b"), _loglinear,
                     lambda x, b: np.stack([np.ones_like(x), np.log(x)], axis=1), None),
}


# ---------------------------------------------------------------------------------------------- smoothing


def ema(y: np.ndarray, alpha: float = 0.3) -> np.ndarray:
    """Exponential moving average, s_0 = y_0, s_t = alpha·y_t + (1−alpha)·s_{t−1}. y: [T] → [T]."""
    y = np.asarray(y, dtype=float)
    out = np.empty_like(y)
    acc = 0.0
    for t, v in enumerate(y):
        acc = v if t == 0 else alpha * v + (1.0 - alpha) * acc
        out[t] = acc
    return out


def rolling_mean(y: np.ndarray, window: int = 5) -> np.ndarray:
    """Centred rolling mean; near the ends the window shrinks (no padding, no lag). y: [T] → [T]."""
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n == 0 or window <= 1:
        return y.copy()
    half = window // 2
    csum = np.concatenate([[0.0], np.cumsum(y)])
    lo = np.clip(np.arange(n) - half, 0, n)
    hi = np.clip(np.arange(n) + (window - half), 0, n)
    return (csum[hi] - csum[lo]) / (hi - lo)


def default_window(n: int) -> int:
    """A smoothing window that grows with the series (≈ n/10, odd, between 1 and 21)."""
    w = max(1, min(21, n // 10))
    return w if w % 2 == 1 else w + 1


# ---------------------------------------------------------------------------------------------- fitting


@dataclass
class LawFit:
    """One law fitted to one series. `ci` maps a parameter to its bootstrap 95% interval [lo, hi]."""

    law: str
    ok: bool
    params: dict[str, float] = field(default_factory=dict)
    ci: dict[str, list[float]] = field(default_factory=dict)
    rmse: float = float("nan")
    r2: float = float("nan")
    cv_rmse: float = float("nan")
    """Held-out RMSE from k-fold cross-validation (model choice)."""
    extrap_rmse: float = float("nan")
    """RMSE predicting the last 30% of steps from a fit on the first 70%."""
    extrap_rel_mae: float = float("nan")
    """Mean absolute error of that extrapolation relative to the mean |y| of the held-out part."""
    extrap_params: dict[str, float] = field(default_factory=dict)
    """Parameters of the fit on the first 70% (what the extrapolation check predicted with)."""
    boot_ok: int = 0
    """Bootstrap resamples whose fit converged (the CI is over these)."""
    note: str = ""

    def to_dict(self) -> dict:
        return {k: _clean(v) for k, v in self.__dict__.items()}


@dataclass
class SeriesFit:
    """All laws fitted to one series, the held-out choice among them, and the reason when nothing was fitted."""

    n: int
    x_range: list[float]
    """First and last step fitted."""
    x_offset: float = 0.0
    """The laws' x is step + x_offset (1 when a series has a step-0 row, e.g. the base model before RL)."""
    fits: dict[str, LawFit] = field(default_factory=dict)
    best: str | None = None
    """Law with the lowest held-out (cross-validated) RMSE, None when no law beats the constant mean."""
    baseline_cv_rmse: float = float("nan")
    """Held-out RMSE of the constant-mean model: a law must beat this to be chosen."""
    naive_extrap_rmse: float = float("nan")
    """RMSE predicting the last 30% with the mean of the last few training points (persistence forecast)."""
    split_step: float = float("nan")
    """Last step of the 70% fitting part in the extrapolation check."""
    note: str = ""

    def to_dict(self) -> dict:
        d = {k: _clean(v) for k, v in self.__dict__.items() if k != "fits"}
        d["fits"] = {k: v.to_dict() for k, v in self.fits.items()}
        return d


def _clean(v):
    """JSON-safe: NaN/inf → None, numpy scalars → float, recursively."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def clean_xy(x, y) -> tuple[np.ndarray, np.ndarray, str]:
    """Sort by x, drop non-finite values and x ≤ 0 (undefined for these laws); returns x, y and a note."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.shape} vs {y.shape}")
    notes = []
    finite = np.isfinite(x) & np.isfinite(y)
    if (~finite).any():
        notes.append(f"dropped {int((~finite).sum())} non-finite point(s)")
    pos = x > 0
    if (finite & ~pos).any():
        notes.append(f"dropped {int((finite & ~pos).sum())} point(s) at x ≤ 0 (the laws need x > 0)")
    keep = finite & pos
    order = np.argsort(x[keep], kind="stable")
    return x[keep][order], y[keep][order], "; ".join(notes)


def _solve_linear(law: Law, x: np.ndarray, y: np.ndarray, b: float) -> tuple[np.ndarray, float]:
    """Linear parameters for a fixed exponent b and the residual sum of squares (inf when ill-posed)."""
    with np.errstate(all="ignore"):
        A = law.design(x, b)
    if not np.all(np.isfinite(A)):
        return np.full(A.shape[1], np.nan), float("inf")
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    r = y - A @ coef
    return coef, float(r @ r)


def fit_law(x: np.ndarray, y: np.ndarray, law: str | Law, grid: int = 48) -> np.ndarray | None:
    """Least-squares parameters of `law` on (x [N] > 0, y [N]) in `param_names` order, or None if ill-posed."""
    law = LAWS[law] if isinstance(law, str) else law
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(x) < len(law.param_names) or len(np.unique(x)) < 2:
        return None
    if law.b_range is None:
        coef, rss = _solve_linear(law, x, y, 0.0)
        return coef if math.isfinite(rss) else None
    lo, hi = law.b_range
    bs = np.geomspace(lo, hi, grid) if law.b_log_grid else np.linspace(lo, hi, grid)
    rss = np.array([_solve_linear(law, x, y, b)[1] for b in bs])
    if not np.any(np.isfinite(rss)):
        return None
    i = int(np.nanargmin(rss))
    # Refine inside the neighbouring grid cells (in log b for a log grid).
    left, right = bs[max(i - 1, 0)], bs[min(i + 1, len(bs) - 1)]
    if law.b_log_grid:
        res = optimize.minimize_scalar(lambda t: _solve_linear(law, x, y, math.exp(t))[1],
                                       bounds=(math.log(left), math.log(right)), method="bounded",
                                       options={"xatol": 1e-6})
        b = math.exp(res.x)
    else:
        res = optimize.minimize_scalar(lambda t: _solve_linear(law, x, y, t)[1], bounds=(left, right),
                                       method="bounded", options={"xatol": 1e-6})
        b = float(res.x)
    if not (res.fun <= rss[i]):
        b = float(bs[i])
    coef, r = _solve_linear(law, x, y, b)
    if not math.isfinite(r) or not np.all(np.isfinite(coef)):
        return None
    return np.concatenate([coef, [b]])


def at_bound(law: str, params: dict[str, float]) -> bool:
    """True when the fitted exponent sits on the edge of its search interval (the law degenerated there)."""
    L = LAWS[law]
    if L.b_range is None:
        return False
    b = params[L.param_names[-1]]
    lo, hi = L.b_range
    if L.b_log_grid:
        return b <= lo * 1.05 or b >= hi / 1.05
    tol = 1e-3 * (hi - lo)
    return b <= lo + tol or b >= hi - tol


def predict(law: str, params: dict[str, float] | np.ndarray, x: np.ndarray) -> np.ndarray:
    """Evaluate a law at x ([N] > 0) with parameters as a dict (by name) or array (in `param_names` order)."""
    L = LAWS[law]
    p = [params[k] for k in L.param_names] if isinstance(params, dict) else list(params)
    with np.errstate(all="ignore"):
        return L.fn(np.asarray(x, dtype=float), *p)


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def bootstrap_ci(x: np.ndarray, y: np.ndarray, law: str, popt: np.ndarray, n_boot: int, rng: np.random.Generator,
                 level: float = 0.95) -> tuple[dict[str, list[float]], int]:
    """Residual-bootstrap percentile intervals for each parameter; returns ({name: [lo, hi]}, converged resamples)."""
    L = LAWS[law]
    fitted = L.fn(x, *popt)
    resid = y - fitted
    resid = resid - resid.mean()
    draws = []
    for _ in range(n_boot):
        yb = fitted + rng.choice(resid, size=len(resid), replace=True)
        p = fit_law(x, yb, L)
        if p is not None:
            draws.append(p)
    if len(draws) < max(5, n_boot // 4):
        return {}, len(draws)
    arr = np.array(draws)
    q = (1 - level) / 2
    lo, hi = np.quantile(arr, q, axis=0), np.quantile(arr, 1 - q, axis=0)
    return {k: [float(lo[i]), float(hi[i])] for i, k in enumerate(L.param_names)}, len(draws)


def kfold_rmse(x: np.ndarray, y: np.ndarray, law: str | None, k: int = 5, seed: int = 0) -> float:
    """Held-out RMSE over k interleaved random folds; law None = the constant-mean model (the no-trend baseline)."""
    n = len(x)
    k = min(k, n)
    if k < 2:
        return float("nan")
    folds = np.random.default_rng(seed).permutation(n) % k
    errs = []
    for f in range(k):
        tr, te = folds != f, folds == f
        if law is None:
            pred = np.full(te.sum(), y[tr].mean())
        else:
            p = fit_law(x[tr], y[tr], law)
            if p is None:
                return float("nan")
            pred = predict(law, p, x[te])
        errs.append((pred - y[te]) ** 2)
    e = np.concatenate(errs)
    return float(np.sqrt(e.mean())) if np.all(np.isfinite(e)) else float("nan")


def split_index(x: np.ndarray, frac: float = 0.7) -> int:
    """Number of leading points in the first `frac` of the step range (x sorted): the extrapolation fit part."""
    cut = x[0] + frac * (x[-1] - x[0])
    return int(np.searchsorted(x, cut, side="right"))


def fit_series(x, y, laws: tuple[str, ...] = tuple(LAWS), n_boot: int = N_BOOT, seed: int = 0,
               extrap_frac: float = 0.7, cv_folds: int = 5, x_offset: float = 0.0) -> SeriesFit:
    """Fit every law to one series (x: steps [N], y: values [N]) with the laws' x = step + x_offset.

    Never raises; explains in `note` when it can't fit. `x_range` and `split_step` are in steps."""
    x, y, note = clean_xy(np.asarray(x, dtype=float) + x_offset, y)
    out = SeriesFit(n=len(x), x_range=[float(x[0]) - x_offset, float(x[-1]) - x_offset] if len(x) else [],
                    x_offset=float(x_offset), note=note)
    notes = [note] if note else []
    if len(x) < MIN_POINTS:
        out.note = "; ".join(notes + [f"only {len(x)} usable point(s) (need ≥ {MIN_POINTS}); not fitted"])
        return out
    if np.ptp(y) <= 1e-12 * max(1.0, abs(float(y[0]))):
        out.note = "; ".join(notes + [f"constant series (all values = {y[0]:.4g}); nothing to fit"])
        return out
    if len(np.unique(x)) < 3:
        out.note = "; ".join(notes + ["fewer than 3 distinct steps; not fitted"])
        return out
    rng = np.random.default_rng(seed)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    k = split_index(x, extrap_frac)
    out.split_step = float(x[k - 1]) - x_offset if k > 0 else float("nan")
    ext_ok = MIN_POINTS - 1 <= k < len(x)
    if ext_ok:
        out.naive_extrap_rmse = _rmse(np.full(len(x) - k, y[max(0, k - 3):k].mean()), y[k:])
    for name in laws:
        L = LAWS[name]
        popt = fit_law(x, y, name)
        if popt is None:
            out.fits[name] = LawFit(name, ok=False, note="did not converge")
            continue
        pred = L.fn(x, *popt)
        lf = LawFit(name, ok=True, params={p: float(v) for p, v in zip(L.param_names, popt)},
                    rmse=_rmse(pred, y), r2=1.0 - float(np.sum((y - pred) ** 2)) / ss_tot)
        if n_boot > 0:
            lf.ci, lf.boot_ok = bootstrap_ci(x, y, name, popt, n_boot, rng)
            if not lf.ci:
                lf.note = f"bootstrap: only {lf.boot_ok}/{n_boot} resamples converged; no CI"
        lf.cv_rmse = kfold_rmse(x, y, name, k=cv_folds, seed=seed)
        if ext_ok:
            pe = fit_law(x[:k], y[:k], name)
            if pe is not None:
                lf.extrap_params = {p: float(v) for p, v in zip(L.param_names, pe)}
                yp = predict(name, pe, x[k:])
                if np.all(np.isfinite(yp)):
                    lf.extrap_rmse = _rmse(yp, y[k:])
                    lf.extrap_rel_mae = float(np.mean(np.abs(yp - y[k:])) / max(np.mean(np.abs(y[k:])), 1e-12))
        if at_bound(name, lf.params):
            lf.note = (lf.note + "; " if lf.note else "") + (
                "exponent at the edge of its range: the law degenerated (for saturating, b → 0 is log-linear)")
        out.fits[name] = lf
    if not ext_ok:
        notes.append(f"too few points before the {int(extrap_frac * 100)}% split for an extrapolation check")
    out.baseline_cv_rmse = kfold_rmse(x, y, None, k=cv_folds, seed=seed)
    scored = [(f.cv_rmse, n) for n, f in out.fits.items() if f.ok and math.isfinite(f.cv_rmse)]
    if scored:
        # Simplest law within 1% of the lowest held-out error: ties (a degenerate law equal to a simpler one) go
        # to fewer parameters.
        low = min(e for e, _ in scored)
        near = [(len(LAWS[n].param_names), e, n) for e, n in scored if e <= low * 1.01]
        _, best_err, best = min(near)
        if math.isfinite(out.baseline_cv_rmse) and best_err >= out.baseline_cv_rmse:
            notes.append(f"no law beats the constant mean on held-out error (noise, no trend); best was {best}")
        else:
            out.best = best
            if out.fits[best].r2 < WEAK_R2:
                notes.append(f"weak trend: the chosen law explains only R² = {out.fits[best].r2:.2f} of the variance")
    else:
        notes.append("no law converged")
    out.note = "; ".join(notes)
    return out
