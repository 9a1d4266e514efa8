"""Problems in: local JSONL, a registered problem source (the toy world's splits), or a Hugging Face hub dataset.

    load_problems("path/to/problems.jsonl")
    load_problems("shared:math500")                             # $ZEROTIR_DATA/benchmarks/math500.jsonl
    load_problems("toy:heldout")                                # source 'toy', split 'heldout'
    load_problems("hf:HuggingFaceH4/MATH-500", split="test")   # needs network + `datasets`
    register_source("mine", lambda split, seed: [...])          # then load_problems("mine:train")

Problem sources are a registry, not imports: `data` sits below the packages that generate problems (toy imports
data), so a source registers itself here when its module is imported, and `KNOWN_SOURCES` names the module to
import the first time a spec asks for a source that has not registered yet ('toy:train' works from anywhere).
'shared:<name>' names a JSONL file in the shared data dir (`data_dir()`: $ZEROTIR_DATA, else ../shared/data next
to the checkout), so presets never hold paths relative to the current directory.

A row without a usable problem or answer is an error naming file, line and field, raised before any work starts
(`strict=True`, the default for training); with `strict=False` such rows are skipped and reported in `skipped`.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

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


def _first_bad_utf8_line(path: str | Path) -> int:
    """1-based number of the first line of `path` that is not valid UTF-8 (0 if none is)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return 0


def load_jsonl_problems(path: str | Path, **kw: Any) -> ProblemSet:
    try:
        rows = [(f"{path}:{lineno}", obj) for lineno, obj in iter_jsonl(path)]
    except RecordError as e:
        raise DataError(str(e)) from None
    except UnicodeDecodeError as e:  # the text reader's position is within a buffer: find the row for the message
        raise DataError(f"{path}:{_first_bad_utf8_line(path)}: not valid UTF-8 ({e.reason}); re-encode the file "
                        f"as UTF-8") from None
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


SourceLoader = Callable[[str, int], "list[Problem]"]
"""A problem source: (split, seed) → problems. Raises ValueError for a split it does not have."""

_SOURCES: dict[str, SourceLoader] = {}

KNOWN_SOURCES: dict[str, str] = {"toy": "zerotir.toy.tasks"}
"""Source name → the module that registers it when imported (lazy discovery)."""


def register_source(name: str, loader: SourceLoader) -> None:
    """Make '<name>:<split>' specs load through `loader(split, seed)`. Re-registering a name replaces it."""
    if not name or ":" in name or "/" in name or name == "hf" or name in _PATH_SOURCES:
        raise ValueError(f"bad problem source name '{name}' (non-empty, no ':' or '/', not 'hf' or 'shared')")
    _SOURCES[name] = loader


def problem_source(name: str) -> SourceLoader | None:
    """The loader registered as `name`, importing its module first when it is a known source; None if unknown."""
    if name not in _SOURCES and name in KNOWN_SOURCES:
        importlib.import_module(KNOWN_SOURCES[name])  # registers itself on import
    return _SOURCES.get(name)


def source_names() -> list[str]:
    return sorted(set(_SOURCES) | set(KNOWN_SOURCES) | set(_PATH_SOURCES))


DATA_ENV = "ZEROTIR_DATA"
"""Environment variable naming the shared data dir (holding benchmarks/ and train/)."""


def data_dir() -> Path:
    """THE shared data dir (benchmarks, training sets): $ZEROTIR_DATA, else ../shared/data next to the checkout or
    the current dir, else ./data."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2]  # the checkout (zerotir/data/__init__.py → ../..)
    for cand in (here.parent / "shared" / "data", Path.cwd().parent / "shared" / "data", Path.cwd() / "data"):
        if cand.is_dir():
            return cand
    return here.parent / "shared" / "data"


def shared_path(name: str) -> Path:
    """'math500' → <data dir>/benchmarks/math500.jsonl; also <dir>/<name>[.jsonl] and <dir>/train/<name>.jsonl, so
    'train/simplerl_math_l3to5' works too. A missing file is a DataError naming the dir and $ZEROTIR_DATA."""
    root = data_dir()
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise DataError(f"shared:{name}: expected a file name inside the shared data dir ({root})")
    cands = [root / name, root / f"{name}.jsonl", root / "benchmarks" / f"{name}.jsonl",
             root / "train" / f"{name}.jsonl"]
    for c in cands:
        if c.is_file():
            return c
    why = "does not exist" if not root.is_dir() else f"has no {name}[.jsonl] (nor in benchmarks/ or train/)"
    raise DataError(f"shared:{name}: the shared data dir {root} {why}; set {DATA_ENV}=DIR to the dir that holds "
                    f"benchmarks/ and train/")


_PATH_SOURCES: dict[str, Callable[[str], Path]] = {"shared": shared_path}
"""Sources that name a JSONL file: resolved to a path, then loaded like a path (same field options, strictness)."""


def _load_from_source(spec: str, loader: SourceLoader, split: str, seed: int) -> ProblemSet:
    try:
        problems = loader(split, seed)
    except ValueError as e:
        raise DataError(f"{spec}: {e}") from None
    if not problems:
        raise DataError(f"{spec}: the source returned no problems")
    return ProblemSet(list(problems), source=spec)


def load_problems(spec: str, *, limit: int = 0, split: str = "test", problem_field: str = "problem",
                  answer_field: str = "answer", strict: bool = True, seed: int = 0) -> ProblemSet:
    """Resolve a data spec: a JSONL path, 'shared:<name>' (a file in `data_dir()`), '<source>:<split>' for a
    registered source (e.g. 'toy:train'; `seed` goes to the source) or 'hf:<dataset id>[:config]'. An existing file
    wins over a source of the same spelling."""
    kw = dict(problem_field=problem_field, answer_field=answer_field, strict=strict)
    name, sep, rest = spec.partition(":")
    is_file = Path(spec).is_file()
    loader = problem_source(name) if sep and not is_file else None
    if sep and not is_file and name in _PATH_SOURCES:
        ps = load_jsonl_problems(_PATH_SOURCES[name](rest), **kw)
    elif loader is not None:
        ps = _load_from_source(spec, loader, rest, seed)
    elif spec.startswith("hf:"):
        ps = load_hf_problems(spec[3:], split=split, **kw)
    else:
        if not Path(spec).is_file():
            raise DataError(f"{spec}: file not found (expected a JSONL path, '<source>:<split>' with a source in "
                            f"{', '.join(source_names())}, or 'hf:<dataset id>')")
        ps = load_jsonl_problems(spec, **kw)
    if limit and limit > 0:
        ps.problems = ps.problems[:limit]
    return ps
