"""The sigmoid law across model size: one formula in N (parameters) and C (compute). Pure functions, no I/O.

Each size's runs give a sigmoid (R0, A, C_mid, B) with seed-bootstrap draws (`sigmoid.fit_runs`). Across sizes:

    A(N)     = with ≥ 4 sizes, one of two 3-parameter forms:
                 saturating  A_inf − k·(N/N0)^(−alpha)                      (every size learned: a ceiling
                                                                             approached as a power law)
                 emergence   R0(N) + (A_inf − R0(N)) / (1 + (N_c/N)^beta)   (some sizes never learned: no gain
                                                                             below N_c, then a rise)
               with 2–3 sizes A(N) = a + b·ln(N/N0); `note` says which, with both forms' SSE. The data choose the
               form, not the SSE: with 4 sizes a 3-parameter form has one degree of freedom, and on a saturating
               truth with noise the more flexible emergence form had the lower SSE (13x).
    C_mid(N) = c·(N/N0)^gamma                (least squares in log C_mid vs log N, over the sizes that learned)
    R0(N)    = r + s·ln(N/N0)                (the base models' step-0 evals; a constant with one distinct value)
    B        = geometric mean of the B of the sizes that learned (ScaleRL shares B across a family)

    R(N, C) = R0(N) + (A(N) − R0(N)) / (1 + (C_mid(N)/C)^B)

A size **learned** when its curve rose by more than its noise (`learned`): a size whose curve never rose has no
point of half gain, so its C_mid and B are whatever the optimiser stopped at (in the toy study toy-0.1m's accuracy
has C_mid 2e8 and B = 10, a bound). Such sizes still inform A(N) (their ceiling is their start) and R0(N), not
C_mid(N) or B.

N0 (the pivot) is the power of ten nearest the sizes' geometric mean: k and c are then the gap and the C_mid at a
size inside the data, nearly uncorrelated with the exponents (with N0 = 1 they trade off along a ridge).

CIs: bootstrap draw i of every size comes from an independent resample of that size's seeds, so refitting the
cross-size laws to draw i of each size gives draw i of the cross-size parameters; percentiles over the draws,
stretched for few seeds as in `sigmoid.widening`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from zerotir.analysis import sigmoid as sg
from zerotir.analysis.fits import LAWS, _clean, fit_law

CROSS_PARAMS = ("A_inf", "k", "alpha", "N_c", "beta", "a", "b", "c", "gamma", "r", "s", "B", "N0")
"""All cross-size parameters; A(N) uses (A_inf, k, alpha), (A_inf, N_c, beta) or (a, b) depending on `a_law`."""
LOG_CROSS = ("c", "B", "N_c", "beta")
"""Parameters whose CIs are stretched in log space."""
BETA_RANGE = (0.3, 10.0)
"""Search range of the emergence law's steepness (10: a step between two sizes, as in sigmoid.B_RANGE)."""


@dataclass
class SizeFit:
    """The cross-size law of one metric in one family (configurations that differ only in model size)."""

    ok: bool
    sizes: list[float] = field(default_factory=list)
    """N of each size fitted, ascending."""
    a_law: str = ""
    """'saturating' (A_inf − k·N^−alpha), 'emergence' (logistic in log N above R0(N)) or 'loglinear'
    (a + b·log N)."""
    learned: list[float] = field(default_factory=list)
    """N of the sizes whose curve rose (`learned`): the ones C_mid(N) and B are fitted to."""
    params: dict[str, float] = field(default_factory=dict)
    ci: dict[str, list[float]] = field(default_factory=dict)
    boot_ok: int = 0
    formula: str = ""
    draws: list[dict[str, float]] = field(default_factory=list, repr=False)
    a_bounds: tuple[float, float] = (-math.inf, math.inf)
    widen: float = 1.0
    """Small-sample stretch of the intervals (`sigmoid.widening` of the fewest seeds of a size)."""
    note: str = ""

    def to_dict(self) -> dict:
        return _clean({k: v for k, v in self.__dict__.items() if k not in ("draws", "a_bounds")})


def _stretch(est: float, lo: float, hi: float, widen: float, log: bool) -> list[float]:
    """[lo, hi] stretched by `widen` away from est (in log space when log and all are positive)."""
    if log and min(est, lo, hi) > 0:
        e = math.log(est)
        return [math.exp(e - widen * max(e - math.log(lo), 0)), math.exp(e + widen * max(math.log(hi) - e, 0))]
    return [est - widen * max(est - lo, 0.0), est + widen * max(hi - est, 0.0)]


def learned(f: sg.SigmoidFit) -> bool:
    """The size's curve moved: its fitted rise within the compute reached (`SigmoidFit.rise`) exceeds twice the
    fit's RMSE (the noise of one eval point). Not A − R0, which may be an extrapolation, nor A's CI, which the
    small-sample widening makes span everything with 2 seeds. A fit that is not ok has no rise: False."""
    return f.ok and math.isfinite(f.rise) and abs(f.rise) > 2 * f.rmse


def _emergence_fit(u: np.ndarray, A: np.ndarray, r0: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(A_inf, N_c/N0, beta) of A = r0 + (A_inf − r0)·w, w = 1/(1 + (n_c/u)^beta), by a grid over (log n_c, log beta)
    with A_inf solved in closed form, then a bounded refinement; → (params, SSE) or None."""
    from scipy import optimize

    lu = np.log(u)
    lo_c, hi_c = lu.min() - 0.5, lu.max() + 0.5
    lo_b, hi_b = math.log(BETA_RANGE[0]), math.log(BETA_RANGE[1])

    def solve(t: np.ndarray) -> tuple[float, float]:
        lc, lb = float(np.clip(t[0], lo_c, hi_c)), float(np.clip(t[1], lo_b, hi_b))
        w = 1.0 / (1.0 + np.exp(math.exp(lb) * (lc - lu)))
        den = float(np.sum(w * w))
        if den <= 1e-12:
            return math.nan, math.inf
        a_inf = float(np.sum(w * (A - r0 * (1 - w)))) / den
        return a_inf, float(np.sum((r0 + (a_inf - r0) * w - A) ** 2))

    grid = [(lc, lb) for lc in np.linspace(lo_c, hi_c, 41) for lb in np.linspace(lo_b, hi_b, 15)]
    sse = [solve(np.array(g))[1] for g in grid]
    if not np.any(np.isfinite(sse)):
        return None
    t0 = np.array(grid[int(np.nanargmin(sse))])
    res = optimize.minimize(lambda t: solve(t)[1], t0, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-12})
    t = res.x if res.fun <= min(sse) else t0
    lc, lb = float(np.clip(t[0], lo_c, hi_c)), float(np.clip(t[1], lo_b, hi_b))
    a_inf, err = solve(np.array([lc, lb]))
    return (np.array([a_inf, math.exp(lc), math.exp(lb)]), err) if math.isfinite(err) else None


def _a_fit(law: str, u: np.ndarray, A: np.ndarray, r0: np.ndarray) -> tuple[dict[str, float], float] | None:
    """One A(N) form fitted to the sizes' A → (its parameters, SSE), or None."""
    if law == "emergence":
        got = _emergence_fit(u, A, r0)
        if got is None:
            return None
        (a_inf, n_c, beta), err = got
        return {"A_inf": float(a_inf), "N_c": float(n_c), "beta": float(beta)}, err  # N_c in units of N0 here
    pa = fit_law(u, A, law)
    if pa is None:
        return None
    out = ({"A_inf": float(pa[0]), "k": float(pa[1]), "alpha": float(pa[2])} if law == "saturating"
           else {"a": float(pa[0]), "b": float(pa[1])})
    return out, float(np.sum((LAWS[law].fn(u, *pa) - A) ** 2))


def fit_cross(ns, params: list[dict[str, float]], n0: float | None = None, law: str | None = None,
              rose: list[bool] | None = None) -> tuple[str, dict[str, float]] | None:
    """Cross-size laws through per-size sigmoid parameters (ns [S] > 0, one dict per size). `law` forces A(N)'s form
    (default: see the module docstring); `rose` [S] marks the sizes that learned (default all), the only ones
    C_mid(N) and B are fitted to (≥ 2 needed). None when ill-posed."""
    ns = np.asarray(ns, dtype=float)
    if len(ns) < 2 or len(np.unique(ns)) < 2 or np.any(ns <= 0):
        return None
    n0 = 10.0 ** round(float(np.mean(np.log10(ns)))) if n0 is None else n0
    u = ns / n0
    A = np.array([p["A"] for p in params])
    cm = np.array([p["C_mid"] for p in params])
    r0 = np.array([p["R0"] for p in params])
    b = np.array([p["B"] for p in params])
    m = np.ones(len(ns), bool) if rose is None else np.asarray(rose, bool)
    if m.sum() < 2 or len(np.unique(ns[m])) < 2:
        return None
    if not (np.all(np.isfinite(A)) and np.all(cm[m] > 0) and np.all(b[m] > 0) and np.all(np.isfinite(r0))):
        return None
    out: dict[str, float] = {}
    s, r = np.polyfit(np.log(u), r0, 1) if np.ptp(r0) > 0 else (0.0, float(r0[0]))
    r0_line = r + s * np.log(u)
    # With 4 sizes a 3-parameter form has one degree of freedom: the SSEs cannot choose (emergence fits a noisy
    # saturating truth 13x better), the data can: sizes that never learned are a threshold, so emergence.
    preferred = "emergence" if not m.all() else "saturating"
    laws = [law] if law else (["saturating", "emergence"] if len(np.unique(ns)) >= 4 else ["loglinear"])
    fits = {name: got for name in laws if (got := _a_fit(name, u, A, r0_line)) is not None}
    if not fits:
        return None
    law = law or (preferred if preferred in fits else min(fits, key=lambda name: fits[name][1]))
    out.update(fits[law][0])
    if law == "emergence":
        out["N_c"] *= n0
    slope, icpt = np.polyfit(np.log(u[m]), np.log(cm[m]), 1)
    out.update(c=math.exp(icpt), gamma=float(slope))
    out.update(r=float(r), s=float(s), B=float(np.exp(np.mean(np.log(b[m])))), N0=n0)
    if len(fits) > 1:
        out.update({f"sse_{name}": float(v[1]) for name, v in fits.items()})
    return law, out


def law_at(law: str, p: dict[str, float], n: float, a_bounds=(-math.inf, math.inf)) -> dict[str, float]:
    """Sigmoid parameters (R0, A, C_mid, B) the cross-size law gives at size n; A clipped to a_bounds."""
    u = n / p["N0"]
    r0 = p["r"] + p["s"] * math.log(u)
    if law == "saturating":
        a = p["A_inf"] - p["k"] * u ** (-p["alpha"])
    elif law == "emergence":
        a = r0 + (p["A_inf"] - r0) / (1.0 + (p["N_c"] / n) ** p["beta"])
    else:
        a = p["a"] + p["b"] * math.log(u)
    return {"R0": r0, "A": float(np.clip(a, *a_bounds)), "C_mid": p["c"] * u ** p["gamma"], "B": p["B"]}


def formula(law: str, p: dict[str, float]) -> str:
    """The law as one formula in N and C, with the fitted numbers."""
    u = f"(N/{p['N0']:.0e})"
    if law == "saturating":
        a = f"{p['A_inf']:.3g} {_signed(-p['k'])}·{u}^(−{p['alpha']:.3g})"
    elif law == "emergence":
        a = f"R0 + ({p['A_inf']:.3g} − R0) / (1 + ({p['N_c']:.3g}/N)^{p['beta']:.3g})"
    else:
        a = f"{p['a']:.3g} {_signed(p['b'])}·ln{u}"
    r0 = f"{p['r']:.3g} {_signed(p['s'])}·ln{u}" if p["s"] else f"{p['r']:.3g}"
    return (f"R(N, C) = R0 + (A − R0) / (1 + (C_mid/C)^{p['B']:.3g}) with A = {a}, "
            f"C_mid = {p['c']:.3g}·{u}^{p['gamma']:.3g}, R0 = {r0}")


def _signed(v: float) -> str:
    """'+ 0.5' or '− 0.5' (a term of a formula)."""
    return f"{'−' if v < 0 else '+'} {abs(v):.3g}"


def fit_sizes(ns, fits: list[sg.SigmoidFit], a_bounds=(-math.inf, math.inf), level: float = 0.95) -> SizeFit:
    """Cross-size law through the sizes' sigmoid fits (ns [S], fits [S]), CIs from their bootstrap draws."""
    pairs = sorted(((float(n), f) for n, f in zip(ns, fits) if f.ok and n and math.isfinite(n)), key=lambda t: t[0])
    out = SizeFit(ok=False, sizes=[n for n, _ in pairs], a_bounds=a_bounds)
    skipped = len(fits) - len(pairs)
    notes = [f"{skipped} size(s) without a sigmoid fit or a parameter count left out"] if skipped else []
    if len({n for n, _ in pairs}) < 2:
        out.note = "; ".join(notes + ["fewer than 2 sizes with a sigmoid fit: no cross-size law"])
        return out
    rose = [learned(f) for _, f in pairs]
    out.learned = [n for (n, _), r in zip(pairs, rose) if r]
    if len(set(out.learned)) < 2:
        out.note = "; ".join(notes + [f"{len(set(out.learned))} of {len(pairs)} sizes learned (rise > 2·RMSE): "
                                      "C_mid(N) needs ≥ 2, no cross-size law"])
        return out
    if len(out.learned) < len(pairs):
        notes.append("C_mid(N) and B from the sizes that learned only (N = " + ", ".join(
            f"{n:.3g}" for n in out.learned) + "); A(N) and R0(N) from all")
    got = fit_cross([n for n, _ in pairs], [f.params for _, f in pairs], rose=rose)
    if got is None:
        out.note = "; ".join(notes + ["cross-size fit failed"])
        return out
    out.ok, (out.a_law, out.params) = True, got
    out.formula = formula(*got)
    if out.a_law == "loglinear":
        notes.append(f"only {len(pairs)} sizes: A(N) = a + b·ln N (the 3-parameter forms need ≥ 4)")
    else:
        other = "saturating" if out.a_law == "emergence" else "emergence"
        why = "some sizes never learned" if out.a_law == "emergence" else "every size learned"
        if f"sse_{other}" in out.params:
            notes.append(f"A(N): {out.a_law}, as {why} (SSE {out.params[f'sse_{out.a_law}']:.3g}; {other}: "
                         f"{out.params[f'sse_{other}']:.3g})")
    draws = [np.asarray(f.draws, dtype=float) for _, f in pairs]
    out.widen = sg.widening(min(f.n_runs for _, f in pairs)) if all(f.n_runs >= 2 for _, f in pairs) else 1.0
    n_boot = min((len(d) for d in draws), default=0)
    if n_boot and all(d.ndim == 2 for d in draws):
        names = [k for k in CROSS_PARAMS if k in out.params and k != "N0"]
        rows = []
        for i in range(n_boot):
            ps = [dict(zip(sg.PARAMS, d[i])) for d in draws]
            ok = all(np.all(np.isfinite(d[i])) for d in draws)
            g = fit_cross(out.sizes, ps, out.params["N0"], law=out.a_law, rose=rose) if ok else None
            if g is not None and g[0] == out.a_law:
                rows.append(g[1])
        out.boot_ok, out.draws = len(rows), rows
        if len(rows) >= max(5, n_boot // 4):
            arr = np.array([[r[k] for k in names] for r in rows])
            q = (1 - level) / 2
            lo, hi = np.quantile(arr, q, axis=0), np.quantile(arr, 1 - q, axis=0)
            out.ci = {k: _stretch(out.params[k], float(lo[j]), float(hi[j]), out.widen, k in LOG_CROSS)
                      for j, k in enumerate(names)}
        else:
            notes.append(f"bootstrap: only {len(rows)}/{n_boot} draws fitted; no CI")
    if any("single run" in f.ci_method for _, f in pairs):
        notes.append("some sizes have one run: their CIs come from the (optimistic) residual bootstrap")
    out.note = "; ".join(notes)
    return out


def predict_size(sf: SizeFit, n: float, c_grid, level: float = 0.95) -> dict:
    """The cross-size law's prediction at size n: sigmoid parameters (with bootstrap CIs) and R on `c_grid`."""
    p = law_at(sf.a_law, sf.params, n, sf.a_bounds)
    c_grid = np.asarray(c_grid, dtype=float)
    out = {"N": float(n), "params": p, "ci": {}, "C": c_grid.tolist(), "R": sg.predict(p, c_grid).tolist()}
    if sf.draws:
        arr = np.array([[law_at(sf.a_law, d, n, sf.a_bounds)[k] for k in sg.PARAMS] for d in sf.draws])
        q = (1 - level) / 2
        lo, hi = np.quantile(arr, q, axis=0), np.quantile(arr, 1 - q, axis=0)
        out["ci"] = {k: _stretch(p[k], float(lo[j]), float(hi[j]), sf.widen, k in sg.LOG_PARAMS)
                     for j, k in enumerate(sg.PARAMS)}
        curves = np.array([sg.predict(dict(zip(sg.PARAMS, row)), c_grid) for row in arr])
        r = np.asarray(out["R"])
        clo, chi = np.quantile(curves, q, axis=0), np.quantile(curves, 1 - q, axis=0)
        out["R_lo"] = (r - sf.widen * np.maximum(r - clo, 0)).tolist()
        out["R_hi"] = (r + sf.widen * np.maximum(chi - r, 0)).tolist()
    return _clean(out)
