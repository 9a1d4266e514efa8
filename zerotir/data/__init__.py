"""Problems in: local JSONL, the toy world's procedural splits, or a Hugging Face hub dataset.

    load_problems("../shared/data/benchmarks/math500.jsonl")
    load_problems("toy:heldout")
    load_problems("hf:HuggingFaceH4/MATH-500", split="test")   # needs network + `datasets`

A row without a usable problem or answer is an error naming file, line and field, raised before any work starts
(`strict=True`, the default for training); with `strict=False` such rows are skipped and reported in `skipped`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from zerotir.types import Problem, RecordError, iter_jsonl


class DataError(ValueError):
    """A dataset that cannot be used; the message names the file/row/field."""


@dataclass
class ProblemSet:
    problems: list[Problem]
    skipped: list[str] = field(default_factory=list)
    """One line per row that had no usable problem/answer (only with strict=False)."""
    source: str = ""


def _row_to_problem(row: dict[str, Any], where: str, default_id: str, problem_field: str, answer_field: str,
                    source: str) -> Problem:
    prob, ans = row.get(problem_field), row.get(answer_field)
    if not isinstance(prob, str) or not prob.strip():
        raise DataError(f"{where}: field '{problem_field}' is missing or empty")
    if ans is None or (isinstance(ans, str) and not ans.strip()) or isinstance(ans, (dict, list)):
        raise DataError(f"{where}: field '{answer_field}' is missing, empty or not a scalar")
    meta = {k: v for k, v in row.items() if k not in ("id", problem_field, answer_field, "source")}
    return Problem(id=str(row.get("id", default_id)), prompt=prob, answer=str(ans).strip(),
                   source=str(row.get("source", source)), meta=meta)


def problems_from_rows(rows: Iterable[tuple[str, dict]], *, problem_field: str = "problem",
                       answer_field: str = "answer", strict: bool = True, source: str = "") -> ProblemSet:
    """Rows are (location string, mapping). Duplicate ids are an error (strict) or renamed."""
    out, skipped, seen = [], [], set()
    for i, (where, row) in enumerate(rows):
        try:
            p = _row_to_problem(row, where, f"{Path(source).stem or 'row'}-{i}", problem_field, answer_field, source)
        except DataError as e:
            if strict:
                raise
            skipped.append(str(e))
            continue
        if p.id in seen:
            if strict:
                raise DataError(f"{where}: duplicate id '{p.id}'")
            p.id = f"{p.id}#{i}"
        seen.add(p.id)
        out.append(p)
    return ProblemSet(out, skipped, source)


def load_jsonl_problems(path: str | Path, **kw: Any) -> ProblemSet:
    try:
        rows = [(f"{path}:{lineno}", obj) for lineno, obj in iter_jsonl(path)]
    except RecordError as e:
        raise DataError(str(e)) from None
    if not rows:
        raise DataError(f"{path}: no rows")
    return problems_from_rows(rows, source=str(path), **kw)


def load_hf_problems(dataset_id: str, split: str = "test", **kw: Any) -> ProblemSet:
    """Load a hub dataset via `datasets` (network needed) and map its rows like JSONL rows."""
    try:
        import datasets  # type: ignore
    except ImportError:
        raise DataError("hub datasets need the 'datasets' package: pip install 'zerotir[hub]'") from None
    name, _, config = dataset_id.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # network/hub errors vary by version
        raise DataError(f"hf:{dataset_id}: could not load split '{split}' ({type(e).__name__}: {e})") from None
    return problems_from_rows(((f"hf:{dataset_id}[{split}] row {i}", dict(r)) for i, r in enumerate(ds)),
                              source=f"hf:{dataset_id}", **kw)


def load_problems(spec: str, *, limit: int = 0, split: str = "test", problem_field: str = "problem",
                  answer_field: str = "answer", strict: bool = True, seed: int = 0) -> ProblemSet:
    """Resolve a data spec: a JSONL path, 'toy:<split>' or 'hf:<dataset id>[:config]'."""
    kw = dict(problem_field=problem_field, answer_field=answer_field, strict=strict)
    if spec.startswith("toy:"):
        from zerotir.toy.tasks import toy_problems

        ps = ProblemSet(toy_problems(spec[4:], seed=seed), source=spec)
    elif spec.startswith("hf:"):
        ps = load_hf_problems(spec[3:], split=split, **kw)
    else:
        if not Path(spec).is_file():
            raise DataError(f"{spec}: file not found (expected a JSONL path, 'toy:<split>' or 'hf:<dataset id>')")
        ps = load_jsonl_problems(spec, **kw)
    if limit and limit > 0:
        ps.problems = ps.problems[:limit]
    return ps
