"""Report blocks (see `render`) for the sigmoid laws (`lawfit.LawResult`) and for scored pre-registered predictions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from zerotir.analysis import sigmoid as sg
from zerotir.analysis.lawfit import LawResult

BASELINES = ("sigmoid", "persistence", "mean", "power_law")


def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def with_ci(params: dict, ci: dict, key: str) -> str:
    v = params.get(key)
    c = ci.get(key) if ci else None
    return fmt(v) + (f" [{fmt(c[0])}, {fmt(c[1])}]" if c else "")


def _errors(errs: dict) -> list[str]:
    return [fmt(errs.get(k)) for k in BASELINES]


def _verdict(errs: dict) -> str:
    s = errs.get("sigmoid")
    rest = [v for k, v in errs.items() if k != "sigmoid" and v is not None and math.isfinite(v)]
    if s is None or not math.isfinite(s) or not rest:
        return "–"
    best = min(rest)
    if best == 0:  # a flat series (e.g. accuracy 0 throughout): persistence is exact, no ratio exists
        return "a baseline is exact (flat series); the law ties it" if s == 0 else \
            "law does NOT beat the best baseline (a baseline is exact: flat series)"
    return f"law beats all baselines ({s / best:.2f}× the best)" if s < best else \
        f"law does NOT beat the best baseline ({s / best:.2f}×)"


def law_blocks(res: LawResult, plots: Path, out: Path) -> list[tuple]:
    """Sigmoid per group, the cross-size law per family, both held-out tests, and the plots (written here)."""
    from zerotir.analysis.plots import plot_cross_size, plot_sigmoid_family

    blocks: list[tuple] = [
        ("h", 2, f"Sigmoid law vs {res.x}"),
        ("p", f"{sg.FORMULA}, fitted to every seed's points of a group (x = {res.x}; R0 = the step-0 eval). "
              "CIs: bootstrap over seeds (whole runs resampled, refitted); a single-run group falls back to a "
              "residual bootstrap, marked so, whose CI is optimistic under correlated noise.")]
    rows = []
    for g in res.groups:
        for m, f in g.fits.items():
            if not f.ok:
                rows.append([g.group.label, fmt(g.n_params), m, "–", "–", "–", "–", "–", "–", f.note])
                continue
            p, ci = f.params, f.ci
            rows.append([g.group.label, fmt(g.n_params), m, fmt(p["R0"]), with_ci(p, ci, "A"), with_ci(p, ci, "C_mid"),
                         with_ci(p, ci, "B"), fmt(f.rmse), f.ci_method or "none", f.note])
    if rows:
        blocks.append(("table", ["group", "N", "metric", "R0", "A [95% CI]", "C_mid [95% CI]", "B [95% CI]",
                                 "RMSE", "CI method", "note"], rows))
    else:
        blocks.append(("note", "no group has the sigmoid metrics on this axis"))

    blocks += [("h", 3, "Compute extrapolation"),
               ("p", "Each group fitted on the points with x ≤ half of its largest x, predicting the rest. RMSE over "
                     "the held-out points; baselines: persistence (last value seen), the constant mean, and the best "
                     "of the power / saturating / log-linear laws by cross-validation on the fitted half.")]
    rows = []
    for g in res.groups:
        for m, e in g.extrap.items():
            errs = e.get("errors", {})
            law = (e.get("power_law") or {}).get("law", "")
            rows.append([g.group.label, m, e.get("n_fit"), e.get("n_test")] + _errors(errs)
                        + [law, _verdict(errs), e.get("note", "")])
    blocks.append(("table", ["group", "metric", "n fit", "n test", "sigmoid", "persistence", "mean",
                             "power law", "(which)", "verdict", "note"], rows))

    for fi, fam in enumerate(res.families):
        blocks.append(("h", 3, f"Across sizes: {fam.label}"))
        ns = ", ".join(fmt(g.n_params) for g in fam.groups)
        blocks.append(("p", f"Sizes N = {ns}. A(N), with ≥ 4 sizes: A_inf − k·(N/N0)^−alpha (saturating) when "
                            "every size learned, R0(N) + (A_inf − R0(N)) / (1 + (N_c/N)^beta) (emergence) when some "
                            "did not; with fewer, a + b·ln(N/N0). C_mid(N) = c·(N/N0)^gamma and B (geometric mean) "
                            "from the sizes that learned (their fitted rise exceeds twice the fit's RMSE); "
                            "R0(N) = r + s·ln(N/N0). CIs from the sizes' seed-bootstrap draws, refitted draw by "
                            "draw."))
        rows = []
        for m, sf in fam.cross.items():
            if not sf.ok:
                rows.append([m, "–", "–", sf.note])
                continue
            rows.append([m, sf.formula, ", ".join(f"{k}={with_ci(sf.params, sf.ci, k)}" for k in sf.params
                                                  if not k.startswith("sse_")),
                         sf.note])
        if rows:
            blocks.append(("table", ["metric", "law in N and C", "parameters [95% CI]", "note"], rows))
        rows = []
        for m, t in fam.size_test.items():
            if not t.get("predicted"):
                rows.append([m, fmt(t.get("held_out_N")), "–", "–", "–", "–", "–", "–", "–", "–", t.get("note", "")])
                continue
            pr, act = t["predicted"], t.get("actual", {})
            rows.append([m, fmt(t["held_out_N"]), with_ci(pr["params"], pr.get("ci"), "A"),
                         with_ci(act.get("params") or {}, act.get("ci"), "A"),
                         with_ci(pr["params"], pr.get("ci"), "C_mid"),
                         with_ci(act.get("params") or {}, act.get("ci"), "C_mid")] + _errors(t["errors"])
                        + [_verdict(t["errors"]), t.get("note", "")])
        if rows:
            blocks += [("p", "Size extrapolation: the law fitted on every size but the largest predicts the largest "
                             "(A, C_mid, and its points: RMSE). Baselines: the next-largest size's seed-mean curve "
                             "(persistence), the mean of the smaller sizes' points, and y = a·N^b·C^g."),
                       ("table", ["metric", "held-out N", "A predicted", "A fitted", "C_mid predicted",
                                  "C_mid fitted", "sigmoid", "persistence", "mean", "power law", "verdict", "note"],
                        rows)]
        metrics = [m for m in res.metrics if any(m in g.fits for g in fam.groups)]
        if metrics:
            p = plot_sigmoid_family(fam, metrics, res.x, plots / f"sigmoid_f{fi}.png")
            blocks.append(("img", str(p.relative_to(out)), f"{fam.label}: curves and sigmoids"))
            if fam.cross:
                p = plot_cross_size(fam, metrics, plots / f"cross_size_f{fi}.png")
                blocks.append(("img", str(p.relative_to(out)), f"{fam.label}: A(N) and C_mid(N)"))
    blocks += [("note", n) for n in res.notes]
    return blocks


def scored_blocks(scored: dict) -> list[tuple]:
    """The 'scored' section: each pre-registered size prediction against what the held-out runs did."""
    blocks: list[tuple] = [("h", 2, "Pre-registered predictions, scored"),
                           ("p", f"predictions.json written {scored.get('created')} at revision "
                                 f"{scored.get('git_revision') or 'unknown'}, before the held-out runs "
                                 f"({', '.join(scored.get('held_out_runs', []))}) started.")]
    rows = []
    for s in scored.get("entries", []):
        t = s.get("score") or {}
        if not t.get("predicted"):
            rows.append([s["family"], s["metric"], fmt(s.get("N_measured")), "–", "–", "–", "–", "–", "–", "–",
                         "–", "–", s.get("note", "") or t.get("note", "")])
            continue
        pr, act = t["predicted"], t.get("actual", {})
        rows.append([s["family"], s["metric"], fmt(s.get("N_measured")),
                     with_ci(pr["params"], pr.get("ci"), "A"), with_ci(act.get("params") or {}, act.get("ci"), "A"),
                     with_ci(pr["params"], pr.get("ci"), "C_mid"),
                     with_ci(act.get("params") or {}, act.get("ci"), "C_mid")] + _errors(t["errors"])
                    + [_verdict(t["errors"]), "; ".join(x for x in (s.get("note"), t.get("note")) if x)])
    blocks.append(("table", ["family", "metric", "N", "A predicted", "A actual", "C_mid predicted", "C_mid actual",
                             "sigmoid", "persistence", "mean", "power law", "verdict", "note"], rows))
    return blocks
