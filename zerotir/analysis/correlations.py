"""Correlations between metrics, raw and detrended.

Two series that both trend with training step correlate strongly whatever their relation; the raw correlation is
mostly the shared trend. First differences (y_t − y_{t−1}) remove the trend and ask whether the *changes* move
together. Both are reported, Pearson and Spearman, with p-values.

    correlate(x, y)            → {"n", "raw": {...}, "detrended": {...}, "note"}
    correlation_table(series)  → one row per metric pair, aligned on common steps
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
from scipy import stats

MIN_POINTS = 4
"""Fewer aligned points than this → no correlation, a note instead (differences need one more)."""


def first_differences(y: np.ndarray) -> np.ndarray:
    """y: [T] → [T−1], y[t+1] − y[t]."""
    return np.diff(np.asarray(y, dtype=float))


def _pair(u: np.ndarray, v: np.ndarray) -> dict:
    """Pearson and Spearman (coefficient, two-sided p) of two equal-length series; None where undefined."""
    out: dict = {"n": int(len(u)), "pearson": None, "pearson_p": None, "spearman": None, "spearman_p": None,
                 "note": ""}
    if len(u) < 3:
        out["note"] = f"only {len(u)} point(s)"
        return out
    if np.ptp(u) == 0 or np.ptp(v) == 0:
        out["note"] = "a series is constant; correlation undefined"
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r, p = stats.pearsonr(u, v)
        rho, q = stats.spearmanr(u, v)
    for k, val in (("pearson", r), ("pearson_p", p), ("spearman", rho), ("spearman_p", q)):
        val = float(val)
        out[k] = val if math.isfinite(val) else None
    return out


def correlate(x, y) -> dict:
    """Raw and first-difference correlations of two aligned series (x, y: [T], NaN pairs dropped)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    res = {"n": int(len(x)), "raw": _pair(x, y), "detrended": _pair(first_differences(x), first_differences(y)),
           "note": ""}
    if len(x) < MIN_POINTS:
        res["note"] = f"only {len(x)} aligned point(s) (need ≥ {MIN_POINTS}); correlations unreliable or undefined"
    return res


def align(a: dict[float, float], b: dict[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values of two step→value maps on their common steps, sorted: (steps, a, b), each [T]."""
    steps = np.array(sorted(set(a) & set(b)), dtype=float)
    return steps, np.array([a[s] for s in steps], dtype=float), np.array([b[s] for s in steps], dtype=float)


def correlation_table(series: dict[str, dict[float, float]], names: list[str] | None = None) -> list[dict]:
    """Every pair of metrics in `series` (name → {step: value}), aligned on common steps; one dict per pair."""
    names = [n for n in (names or sorted(series)) if n in series]
    rows = []
    for a, b in itertools.combinations(names, 2):
        _, u, v = align(series[a], series[b])
        rows.append({"a": a, "b": b, **correlate(u, v)})
    return rows
