"""Report tables of `report.analyze`: the headline fits and one section per group (blocks for `render`)."""

from __future__ import annotations

import math
from typing import Any

from zerotir.analysis.fits import LAWS, SeriesFit
from zerotir.analysis.runs import Group

HEADLINE = ("eval/accuracy", "reward/accuracy", "eval/code_ratio", "rollout/code_ratio", "eval/response_tokens",
            "rollout/response_tokens")


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _fmt_p(p: Any) -> str:
    if p is None:
        return "–"
    return "<1e-4" if p < 1e-4 else f"{p:.2g}"


def _param_str(lf) -> str:
    parts = []
    for k, v in lf.params.items():
        ci = lf.ci.get(k)
        parts.append(f"{k}={_fmt(v)}" + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""))
    return ", ".join(parts)


def _headline_blocks(groups: list[Group], fitted: dict[str, dict[str, SeriesFit]], result: dict) -> list[tuple]:
    rows, heads = [], []
    result_groups = {gr["label"]: gr for gr in result["groups"]}
    for g in groups:
        for m in HEADLINE:
            sf = fitted[g.label].get(m)
            if sf is None:
                continue
            if sf.best is None:
                rows.append([g.label, m, "–", "–", "–", "–", "–", "–", sf.note or "no law chosen"])
                continue
            lf = sf.fits[sf.best]
            x_name = f"step + {sf.x_offset:g}" if sf.x_offset else "step"
            seeds = result_groups[g.label]["metrics"][m].get("per_seed") or {}
            b = LAWS[sf.best].param_names[-1]
            spread = ", ".join(_fmt(p[b]) if p else "–" for p in seeds.values()) or "–"
            rows.append([g.label, m, f"{sf.best}: {LAWS[sf.best].formula}, x = {x_name}", _param_str(lf), spread,
                         _fmt(lf.r2), f"{_fmt(lf.cv_rmse)} (mean {_fmt(sf.baseline_cv_rmse)})",
                         f"{_fmt(lf.extrap_rmse)} (persist. {_fmt(sf.naive_extrap_rmse)})", lf.note or sf.note])
            heads.append({"group": g.label, "metric": m, "law": sf.best, "x_offset": sf.x_offset,
                          "params": lf.params, "ci": lf.ci,
                          "r2": lf.r2, "cv_rmse": lf.cv_rmse, "extrap_rmse": lf.extrap_rmse,
                          "naive_extrap_rmse": sf.naive_extrap_rmse})
    result["headline"] = heads
    if not rows:
        return [("h", 2, "Headline fits"), ("note", "none of the headline metrics could be fitted")]
    return [("h", 2, "Headline fits"),
            ("p", "Best law per group for the key metrics; parameters with bootstrap 95% CIs (pooled seeds) and the "
                  "exponent/slope b refitted to each seed alone. Held-out RMSE is compared with the constant-mean "
                  "model, extrapolation RMSE with a persistence forecast."),
            ("table", ["group", "metric", "law", "parameters [95% CI]", "b per seed", "R²", "held-out RMSE",
                       "extrap. RMSE", "note"], rows)]


def _group_blocks(g: Group, gres: dict, present: list[str]) -> list[tuple]:
    seeds = ", ".join(_fmt(s) for s in g.seeds)
    blocks: list[tuple] = [("h", 2, f"Group: {g.label}"),
                           ("p", f"{len(g.runs)} run(s): {', '.join(gres['runs'])} (seeds {seeds}).")]
    if "plot_fits" in gres:
        blocks.append(("img", gres["plot_fits"], f"fits for {g.label}"))
    rows = []
    for m in present:
        mres = gres["metrics"].get(m, {})
        if not mres.get("fits"):
            rows.append([m, "–", "–", "–", "–", "–", "–", mres.get("note") or "no fit"])
            continue
        for name, lf in mres["fits"].items():
            if not lf["ok"]:
                rows.append([m, name, "–", "–", "–", "–", "–", lf["note"]])
                continue
            params = ", ".join(f"{k}={_fmt(v)}" + (f" [{_fmt(lf['ci'][k][0])}, {_fmt(lf['ci'][k][1])}]"
                                                     if k in lf["ci"] else "") for k, v in lf["params"].items())
            best = " ✓" if mres.get("best") == name else ""
            rows.append([m, name + best, mres["n"], params, _fmt(lf["r2"]), _fmt(lf["cv_rmse"]),
                         _fmt(lf["extrap_rmse"]), "; ".join(x for x in (lf["note"], mres.get("note")) if x)])
    blocks.append(("h", 3, "Fits"))
    blocks.append(("table", ["metric", "law (✓ chosen)", "n", "parameters [95% CI]", "R²", "held-out RMSE",
                             "extrap. RMSE", "note"], rows))
    if gres["correlations"]:
        blocks.append(("h", 3, "Correlations (group-mean series, steps every seed has reached)"))
        blocks.append(("p", "Raw correlations of two trending series mostly reflect the shared trend; the "
                            "detrended columns correlate first differences (step-to-step changes). Per-run tables of "
                            "multi-seed groups are in fits.json."))
        crow = []
        for c in gres["correlations"]:
            r, d = c["raw"], c["detrended"]
            crow.append([c["a"], c["b"], c["n"], f"{_fmt(r['spearman'])} (p {_fmt_p(r['spearman_p'])})",
                         f"{_fmt(r['pearson'])} (p {_fmt_p(r['pearson_p'])})",
                         f"{_fmt(d['spearman'])} (p {_fmt_p(d['spearman_p'])})",
                         f"{_fmt(d['pearson'])} (p {_fmt_p(d['pearson_p'])})",
                         "; ".join(x for x in (c["note"], r["note"], d["note"]) if x)])
        blocks.append(("table", ["a", "b", "n", "Spearman raw", "Pearson raw", "Spearman detrended",
                                 "Pearson detrended", "note"], crow))
        if "plot_corr" in gres:
            blocks.append(("img", gres["plot_corr"], f"correlations for {g.label}"))
    return blocks

