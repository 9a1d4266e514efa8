"""PNG figures (matplotlib, Agg backend): group comparison with CI bands, per-group fits, correlation heatmaps.

Each function writes one file and returns its path; none of them shows a window.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from zerotir.analysis.fits import SeriesFit, clean_xy, default_window, predict, rolling_mean  # noqa: E402
from zerotir.analysis.runs import Group, group_band  # noqa: E402

LAW_STYLE = {"power": ("tab:blue", "-"), "saturating": ("tab:red", "-"), "loglinear": ("tab:green", "-")}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_compare(groups: list[Group], metric: str, path: Path) -> Path:
    """All groups on one axis: seeds as faint points, smoothed across-seed mean with a 95% CI band."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, g in enumerate(groups):
        color = f"C{i}"
        n = max((len(r.series.get(metric, {})) for r in g.runs), default=0)
        if n == 0:
            continue
        for r in g.runs:
            s = r.series.get(metric, {})
            ax.plot(list(s), list(s.values()), ".", color=color, alpha=0.25, ms=3)
        band = group_band(g, metric, window=default_window(n))
        # Thick where every seed contributes, thin where only some have got that far (running or shorter runs).
        full = band["n"] == band["n"].max()
        ax.plot(band["step"], band["mean"], "-", color=color, lw=0.8)
        ax.plot(band["step"], np.where(full, band["mean"], np.nan), "-", color=color, lw=2,
                label=f"{g.label} (n={len(g.runs)})")
        if np.isfinite(band["lo"]).any():
            ax.fill_between(band["step"], band["lo"], band["hi"], color=color, alpha=0.2, lw=0)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean over seeds, 95% CI band (thin: not all seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def plot_fits(panels: list[tuple[str, np.ndarray, np.ndarray, SeriesFit]], title: str, path: Path) -> Path:
    """One panel per metric: data, rolling mean, every converged law (best one thick), and the extrapolation check
    (the best law fitted on the first 70%, dashed, predicting the rest right of the dotted line)."""
    ncols = min(3, max(1, len(panels)))
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (metric, x, y, sf) in zip(axes.ravel(), panels):
        x, y, _ = clean_xy(np.asarray(x, dtype=float) + sf.x_offset, y)
        x = x - sf.x_offset  # plotted in steps; the laws take step + x_offset
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3)
        if len(x) == 0:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.plot(x, y, ".", color="0.6", ms=3)
        ux, inv = np.unique(x, return_inverse=True)
        if len(ux) >= 3:  # seeds share steps: average per step first, then smooth along steps
            uy = np.bincount(inv, weights=y) / np.bincount(inv)
            ax.plot(ux, rolling_mean(uy, default_window(len(ux))), "-", color="0.3", lw=1, label="rolling mean")
        xs = np.linspace(x.min(), x.max(), 200)
        for name, lf in sf.fits.items():
            if not lf.ok:
                continue
            color, ls = LAW_STYLE.get(name, ("k", "-"))
            ax.plot(xs, predict(name, lf.params, xs + sf.x_offset), ls, color=color, lw=2.2 if name == sf.best else 0.9,
                    label=f"{name}{' (best)' if name == sf.best else ''}")
        best = sf.fits.get(sf.best) if sf.best else None
        if best is not None and best.extrap_params and np.isfinite(sf.split_step):
            ax.axvline(sf.split_step, color="k", ls=":", lw=0.8)
            xe = xs[xs >= sf.split_step]
            ax.plot(xe, predict(sf.best, best.extrap_params, xe + sf.x_offset), "--", color=LAW_STYLE[sf.best][0],
                    lw=1.2, label="fit on first 70%")
        if sf.note and not sf.fits:
            ax.text(0.02, 0.95, sf.note[:60], fontsize=6, va="top", transform=ax.transAxes)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="best")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_correlations(rows: list[dict], names: list[str], title: str, path: Path) -> Path:
    """Side-by-side Spearman heatmaps: raw series vs first differences (detrended)."""
    idx = {n: i for i, n in enumerate(names)}
    fig, axes = plt.subplots(1, 2, figsize=(3 + 1.1 * len(names), 1.8 + 0.5 * len(names)))
    for ax, kind in zip(axes, ("raw", "detrended")):
        m = np.full((len(names), len(names)), np.nan)
        np.fill_diagonal(m, 1.0)
        for r in rows:
            v = r[kind]["spearman"]
            if r["a"] in idx and r["b"] in idx and v is not None:
                m[idx[r["a"]], idx[r["b"]]] = m[idx[r["b"]], idx[r["a"]]] = v
        im = ax.imshow(m, vmin=-1, vmax=1, cmap="coolwarm")
        for i in range(len(names)):
            for j in range(len(names)):
                if np.isfinite(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=6)
        ax.set_yticks(range(len(names)), names if kind == "raw" else [], fontsize=6)
        ax.set_title(f"Spearman, {kind}", fontsize=9)
    fig.colorbar(im, ax=list(axes), shrink=0.7)
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path

