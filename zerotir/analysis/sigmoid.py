"""The sigmoid law of a metric against compute (ScaleRL, arXiv 2510.13786), fitted robustly, with CIs from a bootstrap
over seeds. Pure functions on numpy arrays; nothing here reads files or plots.

    R(C) = R0 + (A − R0) / (1 + (C_mid / C)^B)        C ≥ 0 (R(0) = R0)

A is the asymptote (ceiling, or floor when the metric falls), B the efficiency (steepness in log C), C_mid the
compute at half of the gain A − R0. R0 is not fitted: it is the base model's step-0 eval (mean over the seeds that
have one); without a step-0 row it is fitted too (and said so).

Fit: for a fixed (C_mid, B) the law is linear in A (in A and R0 when R0 is free), so A is solved exactly by least
squares and only (C_mid, B) are searched: a log grid first — the profile over A of a grid over (A, C_mid), robust
with no starting guess — then a zooming grid around the best point (spacing halved 16 times) that minimises the
same squared error to ~1e-4 in log C_mid. Deterministic, cannot diverge, ~2 ms per fit (the bootstrap refits
hundreds of times). A is clipped to the metric's range (a rate's ceiling lies in [0, 1]).

CIs: `fit_runs` resamples whole runs (seeds) with replacement and refits, R0 included: it sees seed-to-seed spread
and noise correlated along a run. With few seeds the percentile interval is too narrow (see `widening`), so each
side is stretched about the estimate by t_{n−1}/z·√(n/(n−1)). With one run only it falls back to a residual bootstrap, which treats residuals as
independent (optimistic under correlated noise); `SigmoidFit.ci_method` says which one was used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit

from zerotir.analysis import N_BOOT

PARAMS = ("R0", "A", "C_mid", "B")
FORMULA = "R(C) = R0 + (A − R0) / (1 + (C_mid/C)^B)"
MIN_POINTS = 4
"""Fewer points with C > 0 than this → no fit, a note instead."""
B_RANGE = (0.1, 10.0)
"""Efficiency search interval (log grid)."""
C_MID_SPAN = 100.0
"""C_mid is searched from min(C>0)/C_MID_SPAN to max(C)·C_MID_SPAN."""


def sigmoid(c, r0: float, a: float, c_mid: float, b: float) -> np.ndarray:
    """R(C) for C [N] ≥ 0; C = 0 gives R0. Computed as R0 + (A − R0)·expit(B·(log C − log C_mid)) (no overflow)."""
    c = np.asarray(c, dtype=float)
    with np.errstate(divide="ignore"):
        s = expit(b * (np.log(np.where(c > 0, c, 1.0)) - math.log(c_mid)))
    s = np.where(c > 0, s, 0.0)
    return r0 + (a - r0) * s


def predict(params: dict[str, float], c) -> np.ndarray:
    """`sigmoid` with parameters by name (`PARAMS`)."""
    return sigmoid(c, params["R0"], params["A"], params["C_mid"], params["B"])


@dataclass
class SigmoidFit:
    """One sigmoid fitted to one group of runs. `ci` maps a parameter to its 95% interval [lo, hi]."""

    ok: bool
    params: dict[str, float] = field(default_factory=dict)
    ci: dict[str, list[float]] = field(default_factory=dict)
    ci_method: str = ""
    """'seed bootstrap (k runs resampled whole; widened ×f)' or 'residual bootstrap (single run: assumes independent
    residuals, optimistic)'; empty without a bootstrap."""
    r0_source: str = ""
    """'step-0 eval (k runs)' or 'fitted (no step-0 row)'."""
    n: int = 0
    n_runs: int = 0
    rmse: float = float("nan")
    r2: float = float("nan")
    rise: float = float("nan")
    """R(largest compute fitted) − R0: the change the data show (A − R0 may be an extrapolation beyond them)."""
    boot_ok: int = 0
    draws: list[list[float]] = field(default_factory=list, repr=False)
    """Bootstrap parameter draws in `PARAMS` order (failed resamples: NaN rows); the cross-size fit reuses them."""
    note: str = ""

    def to_dict(self, with_draws: bool = False) -> dict:
        from zerotir.analysis.fits import _clean

        return _clean({k: v for k, v in self.__dict__.items() if with_draws or k != "draws"})


def _shape(c: np.ndarray, c_mid: float, b: float) -> np.ndarray:
    return sigmoid(c, 0.0, 1.0, c_mid, b)


def _solve(c, y, r0, c_mid, b, a_bounds) -> tuple[float, float, float]:
    """Exact least-squares A (and R0 when r0 is None) for fixed (C_mid, B), A clipped to a_bounds: (r0, a, rss)."""
    s = _shape(c, c_mid, b)
    if r0 is None:
        X = np.stack([1.0 - s, s], axis=1)
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        r0_, a = float(coef[0]), float(np.clip(coef[1], *a_bounds))
    else:
        ss = float(s @ s)
        a = float(np.clip(r0 + (s @ (y - r0)) / ss, *a_bounds)) if ss > 1e-300 else r0
        r0_ = r0
    r = y - (r0_ + (a - r0_) * s)
    return r0_, a, float(r @ r)


def _grid_rss(c, y, r0, lcs, lbs, a_bounds) -> np.ndarray:
    """Residual sum of squares at every grid point (log C_mid [G], log B [G]) with A (and R0) solved exactly: [G]."""
    S = expit(np.exp(lbs)[:, None] * (np.log(c)[None, :] - lcs[:, None]))  # [G, N]
    if r0 is None:
        # Normal equations of y ≈ R0·(1 − s) + A·s, per grid point (2×2, solved in closed form).
        u = 1.0 - S
        suu, sus, sss = (u * u).sum(1), (u * S).sum(1), (S * S).sum(1)
        suy, ssy = u @ y, S @ y
        det = suu * sss - sus ** 2
        with np.errstate(all="ignore"):
            r0s = (sss * suy - sus * ssy) / det
            a = np.clip((suu * ssy - sus * suy) / det, *a_bounds)
        pred = r0s[:, None] * u + a[:, None] * S
    else:
        with np.errstate(all="ignore"):
            a = np.clip(r0 + (S @ (y - r0)) / (S * S).sum(1), *a_bounds)
        pred = r0 + (a - r0)[:, None] * S
    rss = ((y[None, :] - pred) ** 2).sum(1)
    return np.where(np.isfinite(rss), rss, np.inf)


def fit_sigmoid(c, y, r0: float | None = None, a_bounds: tuple[float, float] = (-np.inf, np.inf),
                grid: tuple[int, int] = (40, 16)) -> dict[str, float] | None:
    """Least-squares sigmoid on points (c [N] > 0, y [N]); r0 fixed when given. Returns params by name or None."""
    c = np.asarray(c, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(c) & np.isfinite(y) & (c > 0)
    c, y = c[keep], y[keep]
    if len(c) < MIN_POINTS or len(np.unique(c)) < 3:
        return None
    lo_c, hi_c = math.log(c.min() / C_MID_SPAN), math.log(c.max() * C_MID_SPAN)
    lo_b, hi_b = math.log(B_RANGE[0]), math.log(B_RANGE[1])
    lcs, lbs = np.meshgrid(np.linspace(lo_c, hi_c, grid[0]), np.linspace(lo_b, hi_b, grid[1]), indexing="ij")
    lcs, lbs = lcs.ravel(), lbs.ravel()
    rss = _grid_rss(c, y, r0, lcs, lbs, a_bounds)
    i = int(np.nanargmin(rss)) if np.any(np.isfinite(rss)) else 0
    lc0, lb0 = float(lcs[i]), float(lbs[i])
    grid_rss = float(rss[i])
    # Least squares over (log C_mid, log B) with A (and R0) solved exactly at every point: zoom in around the best
    # point, halving the spacing each round (vectorised, deterministic; 16 rounds resolve log C_mid to ~1e-4).
    dc, db = (hi_c - lo_c) / (grid[0] - 1), (hi_b - lo_b) / (grid[1] - 1)
    offs = np.linspace(-1.0, 1.0, 5)
    for _ in range(16):
        lcs, lbs = np.meshgrid(np.clip(lc0 + offs * dc, lo_c, hi_c), np.clip(lb0 + offs * db, lo_b, hi_b),
                               indexing="ij")
        rss = _grid_rss(c, y, r0, lcs.ravel(), lbs.ravel(), a_bounds)
        k = int(np.argmin(rss))
        if rss[k] < grid_rss:
            grid_rss, lc0, lb0 = float(rss[k]), float(lcs.ravel()[k]), float(lbs.ravel()[k])
        dc, db = dc / 2, db / 2
    r0_, a, _ = _solve(c, y, r0, math.exp(lc0), math.exp(lb0), a_bounds)
    p = [a, lc0, lb0, r0_]
    out = {"R0": float(p[3]), "A": float(p[0]), "C_mid": math.exp(p[1]), "B": math.exp(p[2])}
    return out if all(math.isfinite(v) for v in out.values()) else None


def _r0_of(runs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float | None, int]:
    """Mean step-0 value (points at C = 0) over the runs that have one, and how many runs had one."""
    base = [float(np.mean(y[x == 0])) for x, y in runs if np.any(x == 0)]
    return (float(np.mean(base)), len(base)) if base else (None, 0)


def _fit_pooled(runs, a_bounds, r0_override=None):
    r0, _ = _r0_of(runs) if r0_override is None else (r0_override, 1)
    x = np.concatenate([r[0] for r in runs]) if runs else np.zeros(0)
    y = np.concatenate([r[1] for r in runs]) if runs else np.zeros(0)
    return fit_sigmoid(x, y, r0, a_bounds)


LOG_PARAMS = ("C_mid", "B")
"""Positive scale parameters whose intervals are built in log space."""


def widening(n_runs: int, level: float = 0.95) -> float:
    """Factor by which a seed-bootstrap percentile interval is widened about the estimate: t_{n−1}/z · √(n/(n−1)).

    Resampling n whole runs sees their spread with divisor n (not n − 1) and takes normal quantiles where a mean of
    n seeds follows Student's t: with 3–6 seeds the raw interval is 1.4–2.7× too narrow. 1 for n < 2."""
    from scipy import stats

    if n_runs < 2:
        return 1.0
    q = 0.5 + level / 2
    return float(stats.t.ppf(q, n_runs - 1) / stats.norm.ppf(q) * math.sqrt(n_runs / (n_runs - 1)))


def percentile_ci(draws: np.ndarray, est: dict[str, float], widen: float = 1.0,
                  level: float = 0.95) -> dict[str, list[float]]:
    """Percentile intervals of bootstrap draws [n_boot, len(PARAMS)] (NaN rows skipped), each side stretched by
    `widen` away from the estimate (in log space for `LOG_PARAMS`)."""
    ok = draws[np.all(np.isfinite(draws), axis=1)]
    q = (1 - level) / 2
    lo, hi = np.quantile(ok, q, axis=0), np.quantile(ok, 1 - q, axis=0)
    out = {}
    for i, k in enumerate(PARAMS):
        e, a, b = est[k], float(lo[i]), float(hi[i])
        if k in LOG_PARAMS and min(e, a, b) > 0:
            le = math.log(e)
            out[k] = [math.exp(le - widen * max(le - math.log(a), 0.0)),
                      math.exp(le + widen * max(math.log(b) - le, 0.0))]
        else:
            out[k] = [e - widen * max(e - a, 0.0), e + widen * max(b - e, 0.0)]
    return out


def fit_runs(runs: list[tuple], n_boot: int = N_BOOT, seed: int = 0,
             a_bounds: tuple[float, float] = (-np.inf, np.inf)) -> SigmoidFit:
    """Sigmoid fitted to the pooled points of several runs (seeds) of one configuration, with 95% CIs.

    runs: [(c [n_i], y [n_i]), ...] per run, c = the compute axis (0 at the step-0 eval). Never raises: a run with
    no usable points is left out and short or flat data give ok=False with the reason in `note`."""
    notes: list[str] = []
    clean = []
    for r in runs:
        x, y = np.asarray(r[0], dtype=float), np.asarray(r[1], dtype=float)
        keep = np.isfinite(x) & np.isfinite(y) & (x >= 0)
        if keep.any():
            clean.append((x[keep], y[keep]))
    out = SigmoidFit(ok=False, n_runs=len(clean), n=int(sum(len(x) for x, _ in clean)))
    if len(clean) < len(runs):
        notes.append(f"{len(runs) - len(clean)} run(s) without usable points left out")
    r0, n_base = _r0_of(clean)
    out.r0_source = f"step-0 eval ({n_base} run(s))" if r0 is not None else "fitted (no step-0 row)"
    n_pos = sum(int((x > 0).sum()) for x, _ in clean)
    ys = np.concatenate([y for _, y in clean]) if clean else np.zeros(0)
    if n_pos < MIN_POINTS:
        out.note = "; ".join(notes + [f"only {n_pos} point(s) with compute > 0 (need ≥ {MIN_POINTS}); not fitted"])
        return out
    if np.ptp(ys) <= 1e-12 * max(1.0, abs(float(ys[0]))):
        out.note = "; ".join(notes + [f"constant series (all values = {ys[0]:.4g}); nothing to fit"])
        return out
    p = _fit_pooled(clean, a_bounds)
    if p is None:
        out.note = "; ".join(notes + ["sigmoid fit failed (fewer than 3 distinct compute values?)"])
        return out
    out.ok, out.params = True, p
    xs = np.concatenate([x for x, _ in clean])
    pos = xs > 0
    pred = predict(p, xs[pos])
    resid = ys[pos] - pred
    out.rmse = float(np.sqrt(np.mean(resid ** 2)))
    out.rise = float(predict(p, [xs.max()])[0] - p["R0"])
    ss_tot = float(np.sum((ys[pos] - ys[pos].mean()) ** 2))
    out.r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else float("nan")
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        draws = np.full((n_boot, len(PARAMS)), np.nan)
        if len(clean) >= 2:
            out.ci_method = f"seed bootstrap ({len(clean)} runs resampled whole; widened ×{widening(len(clean)):.2f})"
            if len(clean) < 4:
                notes.append(f"only {len(clean)} seeds: the seed-bootstrap CI is coarse")
            for i in range(n_boot):
                pick = rng.integers(0, len(clean), len(clean))
                q = _fit_pooled([clean[j] for j in pick], a_bounds)
                if q is not None:
                    draws[i] = [q[k] for k in PARAMS]
        else:
            out.ci_method = "residual bootstrap (single run: assumes independent residuals, optimistic)"
            x0, y0 = clean[0]
            fitted = predict(p, x0)
            res0 = (y0 - fitted)[x0 > 0]
            res0 = res0 - res0.mean()
            for i in range(n_boot):
                yb = fitted.copy()
                yb[x0 > 0] += rng.choice(res0, size=len(res0), replace=True)
                q = _fit_pooled([(x0, yb)], a_bounds, r0_override=None if r0 is None else r0)
                if q is not None:
                    draws[i] = [q[k] for k in PARAMS]
        out.draws = draws.tolist()
        out.boot_ok = int(np.all(np.isfinite(draws), axis=1).sum())
        if out.boot_ok >= max(5, n_boot // 4):
            out.ci = percentile_ci(draws, p, widening(len(clean)) if len(clean) >= 2 else 1.0)
        else:
            notes.append(f"bootstrap: only {out.boot_ok}/{n_boot} resamples fitted; no CI")
    if p["C_mid"] > xs.max():
        notes.append("C_mid lies beyond the compute reached: the ceiling A is an extrapolation")
    if p["B"] <= B_RANGE[0] * 1.05 or p["B"] >= B_RANGE[1] / 1.05:
        notes.append(f"B = {p['B']:.3g} at the edge of its range {B_RANGE}: the curve's shape is not determined")
    if p["A"] in a_bounds:
        notes.append(f"A at its bound {p['A']:.3g}")
    out.note = "; ".join(notes)
    return out
