"""Sigmoid laws over a chosen x axis for a set of runs: per group (seeds of one configuration), across sizes per
family (groups that differ only in model size), and both held-out tests. Reads nothing: takes loaded `Run`s.

    res = sigmoid_laws(runs, metrics=("eval/accuracy",), x="compute/flops", n_boot=200, seed=0)
    res.to_dict()   # → fits.json["sigmoid"]

A group's size N is its runs' logged `model/params`. A family is the groups whose configs are equal once the keys in
`SIZE_KEYS` (and the usual `runs.IGNORED_KEYS`) are set aside. Never raises on short, flat or missing series.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import numpy as np

from zerotir.analysis import N_BOOT, heldout, sizes
from zerotir.analysis import sigmoid as sg
from zerotir.analysis.fits import _clean
from zerotir.analysis.runs import IGNORED_KEYS, Group, Run, group_runs, run_params, xy_series

SIGMOID_METRICS: tuple[str, ...] = ("eval/accuracy", "eval/code_ratio", "eval/response_tokens")
"""Metrics given the sigmoid law by default (the headline trio)."""
SIZE_KEYS: tuple[str, ...] = ("model.path", "model.*")
"""Config keys that choose the model size: groups differing only in these are one family across sizes."""
X_AXES: tuple[str, ...] = ("compute/flops", "compute/tokens", "compute/seconds", "compute/cpu_seconds", "step")
"""The x axes the CLI offers (any cumulative metric works)."""


def a_bounds(metric: str, ys: np.ndarray) -> tuple[float, float]:
    """Where the ceiling A may lie: [0, 1] for a rate (name ends in accuracy/ratio and the data are in [0, 1]),
    [0, ∞) for a non-negative metric, unbounded otherwise."""
    ys = ys[np.isfinite(ys)]
    if len(ys) and re.search(r"(accuracy|ratio|rate)$", metric) and ys.min() >= 0 and ys.max() <= 1:
        return 0.0, 1.0
    if len(ys) and ys.min() >= 0:
        return 0.0, math.inf
    return -math.inf, math.inf


@dataclass
class GroupLaw:
    """One group's sigmoid per metric, with the compute-extrapolation check."""

    group: Group
    n_params: float | None
    runs_xy: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    fits: dict[str, sg.SigmoidFit] = field(default_factory=dict)
    extrap: dict[str, dict] = field(default_factory=dict)


@dataclass
class Family:
    """Groups that differ only in model size, ascending N; per metric the cross-size law and the size test."""

    label: str
    groups: list[GroupLaw]
    key: str = ""
    """`family_key` of its configs (how held-out runs are matched to it)."""
    cross: dict[str, sizes.SizeFit] = field(default_factory=dict)
    size_test: dict[str, dict] = field(default_factory=dict)


@dataclass
class LawResult:
    x: str
    metrics: list[str]
    groups: list[GroupLaw]
    families: list[Family]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return _clean({
            "x": self.x, "formula": sg.FORMULA, "metrics": self.metrics, "notes": self.notes,
            "groups": [{"label": g.group.label, "N": g.n_params, "runs": [r.name for r in g.group.runs],
                        "metrics": {m: {"sigmoid": g.fits[m].to_dict(), "compute_extrapolation": g.extrap.get(m)}
                                    for m in g.fits}} for g in self.groups],
            "families": [{"label": f.label, "groups": [g.group.label for g in f.groups],
                          "N": [g.n_params for g in f.groups],
                          "metrics": {m: {"cross_size": f.cross[m].to_dict(), "size_extrapolation": f.size_test.get(m)}
                                      for m in f.cross}} for f in self.families]})


def family_key(cfg: dict, ignore: tuple[str, ...] = IGNORED_KEYS) -> str:
    """The experiment key with the size keys set aside (runs without a config key on their own)."""
    from zerotir.analysis.runs import experiment_key

    return experiment_key(cfg, ignore + SIZE_KEYS)


def family_label(g: Group) -> str:
    rest = {k: v for k, v in g.differs.items() if not k.startswith("model.")}
    return ", ".join(f"{k}={v}" for k, v in rest.items()) or "all runs"


def group_law(g: Group, metrics: list[str], x: str, n_boot: int, seed: int, notes: list[str]) -> GroupLaw:
    ns = [n for n in (run_params(r) for r in g.runs) if n]
    if len(set(ns)) > 1:
        notes.append(f"{g.label}: runs log different model/params {sorted(set(ns))}; the median is used")
    gl = GroupLaw(group=g, n_params=float(np.median(ns)) if ns else None)
    for m in metrics:
        xy = []
        for r in g.runs:
            xs, ys, note = xy_series(r, m, x)
            if note:
                notes.append(note)
            if len(xs):
                xy.append((xs, ys))
        if not xy:
            continue
        gl.runs_xy[m] = xy
        bounds = a_bounds(m, np.concatenate([y for _, y in xy]))
        gl.fits[m] = sg.fit_runs(xy, n_boot=n_boot, seed=seed, a_bounds=bounds)
        gl.extrap[m] = heldout.compute_extrapolation(xy, seed=seed, a_bounds=bounds)
    return gl


def families_of(laws: list[GroupLaw], ignore: tuple[str, ...] = IGNORED_KEYS) -> list[Family]:
    """Group laws by family (config minus size keys), sizes ascending; groups without N are left out."""
    buckets: dict[str, list[GroupLaw]] = {}
    for gl in laws:
        cfg = gl.group.runs[0].config
        key = family_key(cfg, ignore) if cfg else f"__noconfig__{gl.group.label}"
        buckets.setdefault(key, []).append(gl)
    fams = []
    for key, members in buckets.items():
        sized = sorted((m for m in members if m.n_params), key=lambda m: m.n_params)
        if sized:
            fams.append(Family(label=family_label(sized[0].group), groups=sized, key=key))
    return fams


def fit_family(fam: Family, metrics: list[str]) -> None:
    for m in metrics:
        members = [g for g in fam.groups if m in g.fits]
        if len({g.n_params for g in members}) < 2:
            continue
        ys = np.concatenate([y for g in members for _, y in g.runs_xy[m]])
        bounds = a_bounds(m, ys)
        fam.cross[m] = sizes.fit_sizes([g.n_params for g in members], [g.fits[m] for g in members], bounds)
        fam.size_test[m] = heldout.size_extrapolation([(g.n_params, g.runs_xy[m], g.fits[m]) for g in members],
                                                      bounds)


def sigmoid_laws(runs: list[Run], metrics: tuple[str, ...] | list[str] | None = None, x: str = "compute/flops",
                 n_boot: int = N_BOOT, seed: int = 0, ignore: tuple[str, ...] = IGNORED_KEYS) -> LawResult:
    """Everything above for `runs` (loaded run dirs) on axis `x`."""
    notes: list[str] = []
    wanted = list(metrics) if metrics else list(SIGMOID_METRICS)
    present = [m for m in wanted if any(m in r.series for r in runs)]
    if len(present) < len(wanted):
        notes.append("sigmoid: metric(s) in no run, skipped: " + ", ".join(m for m in wanted if m not in present))
    if x != "step" and not any(x in r.series for r in runs):
        notes.append(f"sigmoid: no run logs '{x}'; nothing to fit on that axis")
        present = []
    laws = [group_law(g, present, x, n_boot, seed, notes) for g in group_runs(runs, ignore)]
    if any(gl.n_params is None for gl in laws):
        notes.append("groups without model/params in their metrics are left out of the cross-size fit: "
                     + ", ".join(gl.group.label for gl in laws if gl.n_params is None))
    fams = families_of(laws, ignore)
    for f in fams:
        fit_family(f, present)
    return LawResult(x=x, metrics=present, groups=laws, families=fams, notes=list(dict.fromkeys(notes)))


def dumps(obj) -> str:
    return json.dumps(_clean(obj), indent=1, default=str)
