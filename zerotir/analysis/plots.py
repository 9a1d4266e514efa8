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


def plot_compare(groups: list[Group], metric: str, path: Path, xlabel: str = "step") -> Path:
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
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean over seeds, 95% CI band (thin: not all seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def plot_fits(panels: list[tuple[str, np.ndarray, np.ndarray, SeriesFit]], title: str, path: Path,
              xlabel: str = "step") -> Path:
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
        ax.set_xlabel(xlabel, fontsize=8)
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



def _seed_band(runs_xy: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """Per eval point (runs aligned by position, i.e. by step when they share an eval schedule; cut to the shortest
    run): mean x, mean y and a 95% t-band across runs (NaN with one run)."""
    from scipy import stats

    n = min(len(x) for x, _ in runs_xy)
    xs = np.array([x[:n] for x, _ in runs_xy])
    ys = np.array([y[:n] for _, y in runs_xy])
    my = ys.mean(0)
    if len(runs_xy) < 2:
        return xs.mean(0), my, np.full(n, np.nan), np.full(n, np.nan)
    half = stats.t.ppf(0.975, len(runs_xy) - 1) * ys.std(0, ddof=1) / np.sqrt(len(runs_xy))
    return xs.mean(0), my, my - half, my + half


def plot_sigmoid_family(fam, metrics: list[str], x: str, path: Path) -> Path:
    """One panel per metric: each size's seed-mean curve with its 95% band and fitted sigmoid vs x (log axis;
    the step-0 point drawn at the left edge); colour = size."""
    from zerotir.analysis.sigmoid import predict

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.8 * len(metrics), 3.6), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, m in zip(axes[0], metrics):
        ax.set_title(m, fontsize=9)
        ax.grid(alpha=0.3)
        pos = np.concatenate([c[c > 0] for g in fam.groups for c, _ in g.runs_xy.get(m, [])] or [np.zeros(0)])
        if not len(pos):
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        left = pos.min() / 2
        seen_y: list[np.ndarray] = []
        for i, g in enumerate(fam.groups):
            if m not in g.runs_xy:
                continue
            color = cmap(i / max(1, len(fam.groups) - 1) * 0.9)
            bx, by, lo, hi = _seed_band(g.runs_xy[m])
            bx = np.where(bx > 0, bx, left)
            label = f"N={g.n_params:.3g} (n={len(g.runs_xy[m])})"
            ax.plot(bx, by, "o", color=color, ms=2.5, label=label)
            seen_y.append(by[np.isfinite(by)])
            if np.isfinite(lo).any():
                ax.fill_between(bx, lo, hi, color=color, alpha=0.2, lw=0)
            f = g.fits.get(m)
            if f is not None and f.ok:
                xs = np.geomspace(left, bx.max(), 200)
                ax.plot(xs, predict(f.params, xs), "-", color=color, lw=1.6)
        ys = np.concatenate(seen_y) if seen_y else np.zeros(0)
        if len(ys):  # the points decide the view: a 2-seed t-band (t = 12.7) would otherwise flatten every curve
            lo_y, hi_y = float(ys.min()), float(ys.max())
            pad = 0.15 * (hi_y - lo_y or abs(hi_y) or 1.0)
            ax.set_ylim(lo_y - pad, hi_y + pad)
        ax.set_xscale("log")
        ax.set_xlabel(f"{x} (log; step 0 at the left edge)")
        ax.legend(fontsize=6, loc="best")
    fig.suptitle(f"{fam.label}: seed means, 95% bands, fitted sigmoids", fontsize=10)
    return _save(fig, path)


def plot_cross_size(fam, metrics: list[str], path: Path) -> Path:
    """A(N) (log N) and C_mid(N) (log-log) per metric: the sizes' fits with 95% CIs (open markers: sizes that did
    not learn, left out of C_mid(N)) and the cross-size law."""
    from zerotir.analysis.sizes import law_at, learned

    fig, axes = plt.subplots(2, len(metrics), figsize=(4.4 * len(metrics), 6.4), squeeze=False)
    for j, m in enumerate(metrics):
        members = [g for g in fam.groups if m in g.fits and g.fits[m].ok]
        sf = fam.cross.get(m)
        for row, key in enumerate(("A", "C_mid")):
            ax = axes[row][j]
            ax.grid(alpha=0.3, which="both")
            ax.set_title(f"{m}: {key}(N)", fontsize=9)
            if not members:
                continue
            n = np.array([g.n_params for g in members])
            v = np.array([g.fits[m].params[key] for g in members])
            ci = [g.fits[m].ci.get(key, [np.nan, np.nan]) for g in members]
            err = np.abs(np.array([[v[i] - c[0], c[1] - v[i]] for i, c in enumerate(ci)]).T)
            rose = np.array([learned(g.fits[m]) for g in members])
            for sel, face in ((rose, "k"), (~rose, "none")):  # open: no gain, so its C_mid and B are not fitted
                if sel.any():
                    ax.errorbar(n[sel], v[sel], yerr=np.where(np.isfinite(err), err, 0)[:, sel], fmt="o", color="k",
                                mfc=face, ms=4, capsize=3)
            if sf is not None and sf.ok:
                ns = np.geomspace(n.min() / 1.5, n.max() * 3, 100)
                ax.plot(ns, [law_at(sf.a_law, sf.params, k, sf.a_bounds)[key] for k in ns], "-", color="tab:red")
            ax.set_xscale("log")
            if key == "C_mid":
                ax.set_yscale("log")
            elif np.ptp(v) > 0:  # an extrapolated size's CI (e.g. ±1e6 tokens) must not flatten the others
                ax.set_ylim(v.min() - 0.3 * np.ptp(v), v.max() + 0.3 * np.ptp(v))
            ax.set_xlabel("N (parameters)")
    fig.suptitle(f"{fam.label}: sigmoid parameters across sizes (95% CIs)", fontsize=10)
    return _save(fig, path)
