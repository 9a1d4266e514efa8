"""A study spec: a named grid (or list) of config overrides over a base config, validated before anything runs.

    name: toy-scaling                      # the study's name (default study dir: studies/<name>)
    base: toy                              # preset name, or a YAML path (relative to the spec file or the cwd)
    overrides: {train.steps: 60}           # dotted keys applied to every cell
    grid:                                  # axes: dotted key -> non-empty list; the cells are their product
      model.path: [toy-0.2m, toy, toy-3m]  #   (sizes smallest first: the last one is held out by --preregister)
      train.seed: [0, 1, 2]
    grids: [...]                           # more grids, same form (e.g. a no-tools arm over two sizes)
    cells: [{model.path: toy, train.seed: 9}]  # explicit extra cells
    labels: {rollout.max_tool_calls: tools}    # short names for keys in cell names
    held_out: {model.path: toy-3m}         # cells held out by --preregister (default: the last model.path in `grid`)
    analysis: {metrics: [eval/accuracy], x: compute/flops, bootstrap: 200}   # bootstrap: resamples per fit

A cell's name is built from the keys its grid or list entry sets, in order, e.g. `size=toy-0.2m,seed=1`
(`model.path` reads `size`, `train.seed` reads `seed`, any other key its last part unless two keys share it, then
the whole dotted key). Each cell's config is the base, then `overrides`, then the cell's own keys, applied through
`zerotir.config.apply_overrides` (the same code as `zerotir train --set`), so a bad key fails exactly as it would
there. Every error is one `SpecError` line naming the spec file and the key.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zerotir.analysis import N_BOOT
from zerotir.config import Config, ConfigError, apply_overrides, config_to_dict, load_config

TOP_KEYS = ("name", "description", "base", "overrides", "grid", "grids", "cells", "labels", "held_out", "analysis")
ANALYSIS_KEYS = ("metrics", "x", "bootstrap")
DEFAULT_LABELS = {"model.path": "size", "train.seed": "seed"}
DEFAULT_METRICS = ("eval/accuracy", "eval/code_ratio", "eval/response_tokens")
DEFAULT_X = "compute/flops"
DEFAULT_BOOTSTRAP = N_BOOT
# Keys the study decides for each cell (its run dir); a spec setting them would be silently ignored.
STUDY_OWNED = ("train.run_dir",)
_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")


class SpecError(ValueError):
    """A bad study spec, described in one line that names the file and the key."""


@dataclass(frozen=True)
class Cell:
    """One run of the study: its name (the run dir's name) and the overrides it adds to the base."""

    name: str
    own: tuple[tuple[str, Any], ...]
    """(dotted key, value) pairs the cell's grid or list entry sets (what its name is built from)."""
    common: tuple[tuple[str, Any], ...] = ()
    """The spec's `overrides`, applied before `own`."""

    @property
    def overrides(self) -> tuple[tuple[str, Any], ...]:
        return self.common + self.own

    def set_args(self) -> list[str]:
        """The overrides as `key=value` strings for `apply_overrides` (values YAML-dumped, so they parse back
        to exactly the same value: the string '1' stays a string)."""
        return [f"{k}={_yaml_scalar(v)}" for k, v in self.overrides]


@dataclass
class StudySpec:
    name: str
    path: Path
    """The spec file."""
    base: str
    """Base config as given (preset name or YAML path)."""
    base_path: str
    """The base config as load_config takes it (a path resolved against the spec's folder when the file is there)."""
    cells: list[Cell]
    held_out: list[str]
    """Names of the cells held out by --preregister (may be empty)."""
    metrics: tuple[str, ...] = DEFAULT_METRICS
    x: str = DEFAULT_X
    bootstrap: int = DEFAULT_BOOTSTRAP
    """Seed-bootstrap resamples per fit, for the predictions and the analysis (fewer: faster, coarser CIs)."""
    description: str = ""
    raw: dict = field(default_factory=dict)

    def resolve(self, cell: Cell) -> Config:
        """The cell's full Config (base, then overrides, then the cell's keys)."""
        try:
            return apply_overrides(load_config(self.base_path), cell.set_args())
        except ConfigError as e:
            raise SpecError(f"{self.path}: cell {cell.name}: {e}") from None

    def to_dict(self) -> dict:
        """What the study dir keeps as spec.yaml: the spec as written plus every cell's overrides."""
        return {**self.raw, "resolved": {"base": self.base_path, "held_out": self.held_out,
                                         "cells": {c.name: dict(c.own) for c in self.cells}}}


def _yaml_scalar(v: Any) -> str:
    text = yaml.safe_dump(v, default_flow_style=True, width=10_000).strip()
    return text[:-3].strip() if text.endswith("...") else text


def _label_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str) and "/" in v:  # a path: its last part reads best (a clash is a duplicate-name error)
        v = Path(v).name or v
    if isinstance(v, (list, dict)):
        v = _yaml_scalar(v)
    return _SAFE.sub("_", str(v)).strip("_") or "_"


def key_labels(keys: list[str], given: dict[str, str]) -> dict[str, str]:
    """Short label per dotted key: `given`, then DEFAULT_LABELS, then the last part if no other key shares it."""
    lasts = [k.rsplit(".", 1)[-1] for k in keys]
    out = {}
    for k, last in zip(keys, lasts):
        out[k] = given.get(k) or DEFAULT_LABELS.get(k) or (last if lasts.count(last) == 1 else k)
    return out


def cell_name(items: list[tuple[str, Any]], labels: dict[str, str]) -> str:
    """'label=value,...' in the order the keys were given, e.g. size=toy-0.2m,seed=1."""
    return ",".join(f"{labels[k]}={_label_value(v)}" for k, v in items) or "base"


def _err(path: Path, where: str, msg: str) -> SpecError:
    return SpecError(f"{path}: {where}: {msg}")


def _mapping(path: Path, where: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _err(path, where, f"expected a mapping of dotted config keys, got {value!r}")
    for k in value:
        if not isinstance(k, str) or not k:
            raise _err(path, where, f"keys must be dotted config keys (strings), got {k!r}")
        if k in STUDY_OWNED:
            raise _err(path, f"{where}.{k}", "set by the study (each cell runs in <study>/runs/<cell>)")
    return value


def _grid_cells(path: Path, where: str, grid: Any) -> list[list[tuple[str, Any]]]:
    grid = _mapping(path, where, grid)
    if not grid:
        raise _err(path, where, "a grid needs at least one axis")
    for k, values in grid.items():
        if not isinstance(values, list):
            raise _err(path, f"{where}.{k}", f"an axis is a list of values, got {values!r}")
        if not values:
            raise _err(path, f"{where}.{k}", "empty axis (no values)")
    keys = list(grid)
    return [list(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def _base_path(path: Path, base: str) -> str:
    near = path.parent / base
    return str(near) if near.is_file() else base


def parse_spec(path: str | Path, data: Any) -> StudySpec:
    """Validate a loaded spec mapping; every cell's config is resolved (and so type-checked) here."""
    path = Path(path)
    if not isinstance(data, dict):
        raise SpecError(f"{path}: top level must be a mapping (name, base, grid, ...)")
    for k in data:
        if k not in TOP_KEYS:
            raise _err(path, str(k), f"unknown key (known: {', '.join(TOP_KEYS)})")
    name = data.get("name")
    if not isinstance(name, str) or not name or _SAFE.search(name):
        raise _err(path, "name", f"required, letters/digits/._+- only, got {name!r}")
    base = data.get("base", "toy")
    if not isinstance(base, str) or not base:
        raise _err(path, "base", f"expected a preset name or YAML path, got {base!r}")
    base_path = _base_path(path, base)
    try:
        load_config(base_path)
    except ConfigError as e:
        raise _err(path, "base", str(e)) from None
    common = list(_mapping(path, "overrides", data.get("overrides")).items())
    labels_given = _mapping(path, "labels", data.get("labels"))
    entries: list[tuple[str, list[tuple[str, Any]]]] = []
    if "grid" in data:
        entries += [("grid", c) for c in _grid_cells(path, "grid", data["grid"])]
    grids = data.get("grids") or []
    if not isinstance(grids, list):
        raise _err(path, "grids", f"expected a list of grids, got {grids!r}")
    for i, g in enumerate(grids):
        entries += [(f"grids[{i}]", c) for c in _grid_cells(path, f"grids[{i}]", g)]
    cells_raw = data.get("cells") or []
    if not isinstance(cells_raw, list):
        raise _err(path, "cells", f"expected a list of mappings, got {cells_raw!r}")
    for i, c in enumerate(cells_raw):
        entries.append((f"cells[{i}]", list(_mapping(path, f"cells[{i}]", c).items())))
    if not entries:
        raise _err(path, "grid", "no cells: give a grid, grids or cells")
    all_keys = list(dict.fromkeys(k for _, items in entries for k, _ in items))
    labels = key_labels(all_keys, {str(k): str(v) for k, v in labels_given.items()})
    spec = StudySpec(name=name, path=path, base=base, base_path=base_path, cells=[], held_out=[],
                     description=str(data.get("description", "")), raw=data)
    seen: dict[str, str] = {}
    seen_overrides: dict[tuple, str] = {}
    for where, items in entries:
        cell = Cell(cell_name(items, labels), tuple(items), tuple(common))
        key = tuple(sorted(config_to_dict_flat(spec.resolve(cell)).items()))
        if key in seen_overrides:
            raise _err(path, where, f"duplicate cell {cell.name} (same config as {seen_overrides[key]})")
        if cell.name in seen:
            raise _err(path, where, f"two cells are named {cell.name} ({seen[cell.name]} and {where}); "
                                    "give their keys distinct `labels`")
        seen[cell.name], seen_overrides[key] = where, cell.name
        spec.cells.append(cell)
    spec.held_out = _held_out(path, data, spec)
    spec.metrics, spec.x, spec.bootstrap = _analysis(path, data.get("analysis"))
    return spec


def config_to_dict_flat(cfg: Config) -> dict[str, Any]:
    """{'section.key': value} of a Config (lists as tuples, so the items are hashable)."""
    return {f"{s}.{k}": tuple(v) if isinstance(v, list) else v
            for s, sec in config_to_dict(cfg).items() for k, v in sec.items()}


def _held_out(path: Path, data: dict, spec: StudySpec) -> list[str]:
    """Cells whose resolved config matches every key of `held_out`; default: the last model.path of `grid`."""
    held = data.get("held_out")
    if held is None:
        sizes = (data.get("grid") or {}).get("model.path")
        if not sizes or len(sizes) < 2:
            return []
        held = {"model.path": sizes[-1]}
    held = _mapping(path, "held_out", held)
    names = []
    for c in spec.cells:
        flat = config_to_dict_flat(spec.resolve(c))
        for k in held:
            if k not in flat:
                raise _err(path, f"held_out.{k}", "unknown config key")
        if all(flat[k] == (tuple(v) if isinstance(v, list) else v) for k, v in held.items()):
            names.append(c.name)
    if not names:
        raise _err(path, "held_out", f"no cell matches {held}")
    if len(names) == len(spec.cells):
        raise _err(path, "held_out", "every cell is held out: nothing is left to fit the predictions on")
    return names


def _analysis(path: Path, a: Any) -> tuple[tuple[str, ...], str, int]:
    if a is None:
        return DEFAULT_METRICS, DEFAULT_X, DEFAULT_BOOTSTRAP
    if not isinstance(a, dict):
        raise _err(path, "analysis", f"expected a mapping (metrics, x, bootstrap), got {a!r}")
    for k in a:
        if k not in ANALYSIS_KEYS:
            raise _err(path, f"analysis.{k}", f"unknown key (known: {', '.join(ANALYSIS_KEYS)})")
    metrics = a.get("metrics", list(DEFAULT_METRICS))
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise _err(path, "analysis.metrics", f"expected a non-empty list of metric names, got {metrics!r}")
    x = a.get("x", DEFAULT_X)
    if not isinstance(x, str) or not x:
        raise _err(path, "analysis.x", f"expected a metric name or 'step', got {x!r}")
    n_boot = a.get("bootstrap", DEFAULT_BOOTSTRAP)
    if not isinstance(n_boot, int) or isinstance(n_boot, bool) or n_boot < 0:
        raise _err(path, "analysis.bootstrap", f"expected a whole number of resamples >= 0, got {n_boot!r}")
    return tuple(metrics), x, n_boot


def resolve_spec_path(path: str | Path) -> Path:
    """A spec file, or the name of a shipped study (`toy-scaling`, `tiny`, or `configs/studies/<name>.yaml` from
    anywhere): the shipped ones live in zerotir/configs/studies/."""
    p = Path(path)
    if p.is_file():
        return p
    from zerotir.config import BUILTIN_CONFIGS

    shipped = BUILTIN_CONFIGS / "studies" / f"{Path(p.name).stem}.yaml"
    if (p.suffix in ("", ".yaml") and len(p.parts) <= 3 and shipped.is_file()
            and (len(p.parts) == 1 or p.parts[-2] == "studies")):
        return shipped
    known = ", ".join(sorted(q.stem for q in (BUILTIN_CONFIGS / "studies").glob("*.yaml")))
    raise SpecError(f"study spec not found: {path} (shipped studies: {known})")


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a spec file or a shipped study's name (see the module docstring)."""
    p = resolve_spec_path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}:{where} is not valid YAML ({getattr(e, 'problem', e)})") from None
    return parse_spec(p, data)
