"""The sigmoid law across model size: one formula in N (parameters) and C (compute). Pure functions, no I/O.

Each size's runs give a sigmoid (R0, A, C_mid, B) with seed-bootstrap draws (`sigmoid.fit_runs`). Across sizes:

    A(N)     = A_inf − k·(N/N0)^(−alpha)     (≥ 4 sizes; with 2–3 sizes A(N) = a + b·ln(N/N0), said so in `note`)
    C_mid(N) = c·(N/N0)^gamma                (least squares in log C_mid vs log N)
    R0(N)    = r + s·ln(N/N0)                (the base models' step-0 evals; a constant with one distinct value)
    B        = geometric mean of the sizes' B (ScaleRL shares B across a family)

    R(N, C) = R0(N) + (A(N) − R0(N)) / (1 + (C_mid(N)/C)^B)

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
from zerotir.analysis.fits import _clean, fit_law

CROSS_PARAMS = ("A_inf", "k", "alpha", "a", "b", "c", "gamma", "r", "s", "B", "N0")
"""All cross-size parameters; A(N) uses (A_inf, k, alpha) or (a, b) depending on `a_law`."""


@dataclass
class SizeFit:
    """The cross-size law of one metric in one family (configurations that differ only in model size)."""

    ok: bool
    sizes: list[float] = field(default_factory=list)
    """N of each size fitted, ascending."""
    a_law: str = ""
    """'saturating' (A_inf − k·N^−alpha) or 'loglinear' (a + b·log N)."""
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


def fit_cross(ns, params: list[dict[str, float]], n0: float | None = None) -> tuple[str, dict[str, float]] | None:
    """Cross-size laws through per-size sigmoid parameters (ns [S] > 0, one dict per size). None when ill-posed."""
    ns = np.asarray(ns, dtype=float)
    if len(ns) < 2 or len(np.unique(ns)) < 2 or np.any(ns <= 0):
        return None
    n0 = 10.0 ** round(float(np.mean(np.log10(ns)))) if n0 is None else n0
    u = ns / n0
    A = np.array([p["A"] for p in params])
    cm = np.array([p["C_mid"] for p in params])
    r0 = np.array([p["R0"] for p in params])
    b = np.array([p["B"] for p in params])
    if not (np.all(np.isfinite(A)) and np.all(cm > 0) and np.all(b > 0) and np.all(np.isfinite(r0))):
        return None
    out: dict[str, float] = {}
    law = "saturating" if len(np.unique(ns)) >= 4 else "loglinear"
    pa = fit_law(u, A, law)
    if pa is None:
        return None
    if law == "saturating":
        out.update(A_inf=float(pa[0]), k=float(pa[1]), alpha=float(pa[2]))
    else:
        out.update(a=float(pa[0]), b=float(pa[1]))
    slope, icpt = np.polyfit(np.log(u), np.log(cm), 1)
    out.update(c=math.exp(icpt), gamma=float(slope))
    s, r = np.polyfit(np.log(u), r0, 1) if np.ptp(r0) > 0 else (0.0, float(r0[0]))
    out.update(r=float(r), s=float(s), B=float(np.exp(np.mean(np.log(b)))), N0=n0)
    return law, out


def law_at(law: str, p: dict[str, float], n: float, a_bounds=(-math.inf, math.inf)) -> dict[str, float]:
    """Sigmoid parameters (R0, A, C_mid, B) the cross-size law gives at size n; A clipped to a_bounds."""
    u = n / p["N0"]
    a = p["A_inf"] - p["k"] * u ** (-p["alpha"]) if law == "saturating" else p["a"] + p["b"] * math.log(u)
    return {"R0": p["r"] + p["s"] * math.log(u), "A": float(np.clip(a, *a_bounds)),
            "C_mid": p["c"] * u ** p["gamma"], "B": p["B"]}


def formula(law: str, p: dict[str, float]) -> str:
    """The law as one formula in N and C, with the fitted numbers."""
    u = f"(N/{p['N0']:.0e})"
    a = (f"{p['A_inf']:.3g} {_signed(-p['k'])}·{u}^(−{p['alpha']:.3g})" if law == "saturating"
         else f"{p['a']:.3g} {_signed(p['b'])}·ln{u}")
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
    got = fit_cross([n for n, _ in pairs], [f.params for _, f in pairs])
    if got is None:
        out.note = "; ".join(notes + ["cross-size fit failed"])
        return out
    out.ok, (out.a_law, out.params) = True, got
    out.formula = formula(*got)
    if out.a_law == "loglinear":
        notes.append(f"only {len(pairs)} sizes: A(N) = a + b·ln N (A_inf − k·N^−alpha needs ≥ 4)")
    draws = [np.asarray(f.draws, dtype=float) for _, f in pairs]
    out.widen = sg.widening(min(f.n_runs for _, f in pairs)) if all(f.n_runs >= 2 for _, f in pairs) else 1.0
    n_boot = min((len(d) for d in draws), default=0)
    if n_boot and all(d.ndim == 2 for d in draws):
        names = [k for k in CROSS_PARAMS if k in out.params and k != "N0"]
        rows = []
        for i in range(n_boot):
            ps = [dict(zip(sg.PARAMS, d[i])) for d in draws]
            g = fit_cross(out.sizes, ps, out.params["N0"]) if all(np.all(np.isfinite(d[i])) for d in draws) else None
            if g is not None and g[0] == out.a_law:
                rows.append(g[1])
        out.boot_ok, out.draws = len(rows), rows
        if len(rows) >= max(5, n_boot // 4):
            arr = np.array([[r[k] for k in names] for r in rows])
            q = (1 - level) / 2
            lo, hi = np.quantile(arr, q, axis=0), np.quantile(arr, 1 - q, axis=0)
            out.ci = {k: _stretch(out.params[k], float(lo[j]), float(hi[j]), out.widen, k in ("c", "B"))
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
