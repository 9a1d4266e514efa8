"""The study directory on disk: its layout, which cells are finished, and whether a re-run may continue it.

    <study>/spec.yaml          the spec as written + every cell's overrides (`resolved:`); written before any run
    <study>/runs/<cell>/       an ordinary run dir (config.yaml, metrics.jsonl, checkpoints/, transcripts/) + train.log
    <study>/predictions.json   --preregister: written before the held-out cells start
    <study>/report.md, fits.json, ...   the analysis of the whole study (zerotir.analysis.study.analyze_study)

A cell is **finished** when its metrics.jsonl has a row for step `train.steps` and its checkpoint of that step is
complete (`state.json` present). The loop writes the last row before the last checkpoint, so a run killed in
between is not finished: its re-run resumes from the previous checkpoint, trims the rows after it and redoes the last
steps, exactly as `zerotir train --resume` does.

Re-running a study on an existing dir continues it when every cell that has started (a metrics row or a
checkpoint) is still in the new spec with the same config: new cells are added, and cells that never started may be
dropped (their run dirs, holding only config.yaml, are removed) — e.g. a size found too costly to build. Anything
else is an error that names the first changed cell and key, since mixing two designs in one study would make its
analysis meaningless.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from zerotir.config import config_from_dict, save_config
from zerotir.study.spec import SpecError, StudySpec, config_to_dict_flat
from zerotir.telemetry import read_metrics

RUNS = "runs"
SPEC_FILE = "spec.yaml"
LOG_FILE = "train.log"


def run_dir(study_dir: Path, cell_name: str) -> Path:
    return Path(study_dir) / RUNS / cell_name


def last_step(run: Path) -> int:
    """The highest step in the run's metrics.jsonl (0 when there is none)."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        return 0
    return max((int(r.get("step", 0)) for r in read_metrics(path)), default=0)


def is_finished(run: Path, steps: int) -> bool:
    """The last step's metrics row and its complete checkpoint are both there (see the module docstring)."""
    from zerotir.train.checkpoint import CKPT_SUBDIR, checkpoint_name

    ckpt = Path(run) / CKPT_SUBDIR / checkpoint_name(steps) / "state.json"
    return ckpt.is_file() and last_step(run) >= steps


def first_difference(old: dict, new: dict) -> str:
    """'key: old → new' for the first differing key of two flat dicts ('' when equal)."""
    for k in sorted(set(old) | set(new)):
        if old.get(k, "<unset>") != new.get(k, "<unset>"):
            return f"{k}: {old.get(k, '<unset>')!r} → {new.get(k, '<unset>')!r}"
    return ""


def check_continuation(study_dir: Path, spec: StudySpec) -> list[str]:
    """Raise SpecError unless `spec` may continue the study in `study_dir`; returns the names of cells it adds."""
    saved_path = Path(study_dir) / SPEC_FILE
    if not saved_path.is_file():
        return [c.name for c in spec.cells]
    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    old_cells = (saved.get("resolved") or {}).get("cells") or {}
    new = {c.name: c for c in spec.cells}
    where = f"{spec.path}: study dir {study_dir} holds another design"
    for name in old_cells:
        if name not in new and has_started(run_dir(study_dir, name)):
            raise SpecError(f"{where}: cell {name} has started and is no longer in the spec (a re-run may add "
                            "cells and drop cells that never started; use a new study dir)")
    for name in old_cells:
        run_cfg = run_dir(study_dir, name) / "config.yaml"
        if name not in new or not run_cfg.is_file():
            continue
        old = config_to_dict_flat(config_from_dict(yaml.safe_load(run_cfg.read_text(encoding="utf-8"))))
        diff = first_difference(old, config_to_dict_flat(spec.resolve(new[name])))
        if diff:
            raise SpecError(f"{where}: cell {name} changed ({diff}); a re-run may only add cells; "
                            "use a new study dir")
    return [n for n in new if n not in old_cells]


def has_started(run: Path) -> bool:
    """The run dir holds anything besides its config.yaml (metrics, checkpoints, a log): the cell ran."""
    run = Path(run)
    return run.is_dir() and any(p.name != "config.yaml" for p in run.iterdir())


def prepare(study_dir: Path, spec: StudySpec) -> list[str]:
    """Check continuation, then write spec.yaml and each cell's run dir with its config.yaml (kept if present);
    the dirs of dropped never-started cells are removed. Returns the names of the cells new to this study dir."""
    study_dir = Path(study_dir)
    added = check_continuation(study_dir, spec)
    keep = {c.name for c in spec.cells}
    if (study_dir / RUNS).is_dir():
        for rd in (study_dir / RUNS).iterdir():
            if rd.is_dir() and rd.name not in keep and not has_started(rd):
                (rd / "config.yaml").unlink(missing_ok=True)
                rd.rmdir()
    (study_dir / RUNS).mkdir(parents=True, exist_ok=True)
    for c in spec.cells:
        rd = run_dir(study_dir, c.name)
        rd.mkdir(exist_ok=True)
        if not (rd / "config.yaml").is_file():
            save_config(spec.resolve(c), rd / "config.yaml")
    tmp = study_dir / f".{SPEC_FILE}.tmp"
    tmp.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False), encoding="utf-8")
    tmp.replace(study_dir / SPEC_FILE)
    return added
