"""The benchmark registry: name → where its problems come from and how a row maps to a `Problem`.

    load_benchmark("math500")                      # <data dir>/math500.jsonl  ({id, problem, answer} rows)
    load_benchmark("math500", source="hub")        # HuggingFaceH4/MATH-500 through `datasets` (network needed)
    load_benchmark("toy:heldout")                  # anything `zerotir.data.load_problems` accepts also works:
    load_benchmark("path/to/my_set.jsonl")         #   'toy:<split>', 'hf:<id>', a JSONL path

The data dir defaults to `zerotir.data.data_dir() / "benchmarks"` ($ZEROTIR_DATA/benchmarks, or
../shared/data/benchmarks next to the checkout). Rows without a usable problem/answer are NOT silently dropped:
they are listed in `Benchmark.skipped` (one line each, naming file/row/field) and the CLI reports them.
Hub rows come in many shapes (question/problem, answer/final_answer, GSM8K's '#### 72', a boxed solution);
`hub_row_to_record` maps them to the common {id, problem, answer} schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from zerotir.data import DataError, ProblemSet, load_problems, problems_from_rows
from zerotir.reward.extract import last_boxed
from zerotir.types import Problem


class BenchmarkError(ValueError):
    """An unknown benchmark name, a missing data dir/file, or an unusable dataset; one line naming it."""


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    """Registry name (column header of the results table)."""
    file: str
    """JSONL file name inside the data dir."""
    hf_id: str
    """Hugging Face hub dataset id for source='hub'."""
    hf_split: str = "test"
    hf_config: str | None = None
    title: str = ""
    """Column title in the Markdown table (as in the paper)."""


BENCHMARKS: dict[str, BenchmarkSpec] = {s.name: s for s in [
    BenchmarkSpec("aime24", "aime24.jsonl", "HuggingFaceH4/aime_2024", "train", title="AIME24"),
    BenchmarkSpec("aime25", "aime25.jsonl", "MathArena/aime_2025", "train", title="AIME25"),
    BenchmarkSpec("hmmt_feb_2024", "hmmt_feb_2024.jsonl", "MathArena/hmmt_feb_2024", "train", title="HMMT Feb 24"),
    BenchmarkSpec("hmmt_feb_2025", "hmmt_feb_2025.jsonl", "MathArena/hmmt_feb_2025", "train", title="HMMT Feb 25"),
    BenchmarkSpec("cmimc25", "cmimc25.jsonl", "MathArena/cmimc_2025", "train", title="CMIMC25"),
    BenchmarkSpec("amc23", "amc23.jsonl", "math-ai/amc23", "test", title="AMC23"),
    BenchmarkSpec("math500", "math500.jsonl", "HuggingFaceH4/MATH-500", "test", title="MATH500"),
    BenchmarkSpec("olympiadbench", "olympiadbench.jsonl", "Hothan/OlympiadBench", "train", "OE_TO_maths_en_COMP",
                  title="Olympiad"),
    BenchmarkSpec("gsm8k", "gsm8k_test.jsonl", "openai/gsm8k", "test", "main", title="GSM8K"),
    BenchmarkSpec("minerva_math", "minerva_math.jsonl", "knoveleng/Minerva-Math", "train", title="Minerva"),
]}

PAPER_BENCHMARKS = ["aime24", "aime25", "hmmt_feb_2024", "hmmt_feb_2025", "cmimc25", "amc23", "math500",
                    "olympiadbench"]
"""The seed paper's eight benchmarks, in its column order."""


@dataclass
class Benchmark:
    name: str
    problems: list[Problem]
    skipped: list[str] = field(default_factory=list)
    """One line per row without a usable problem/answer (file/row/field named)."""
    source: str = ""
    """Where the problems came from (file path or hub id)."""
    title: str = ""


def default_benchmark_dir() -> Path:
    from zerotir.data import data_dir

    return data_dir() / "benchmarks"


def known_benchmarks() -> list[str]:
    return list(BENCHMARKS)


def parse_benchmark_list(text: str | Iterable[str]) -> list[str]:
    """'a,b, c' (or a list) → ['a', 'b', 'c']; 'paper' expands to the paper's eight; duplicates removed."""
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    out: list[str] = []
    for s in items:
        for name in (PAPER_BENCHMARKS if s == "paper" else [s]):
            if name and name not in out:
                out.append(name)
    if not out:
        raise BenchmarkError("no benchmark given (e.g. --benchmarks math500,aime24)")
    return out


def _is_spec(name: str) -> bool:
    """A data spec rather than a registry name: '<source>:<split>' for a registered data source (toy:, shared:, ...),
    'hf:<id>', or a path to a JSONL file."""
    from zerotir.data import source_names

    source, colon, _ = name.partition(":")
    return bool(colon and source in {*source_names(), "hf"}) or name.endswith(".jsonl") or "/" in name


def check_benchmark_names(names: Iterable[str]) -> None:
    """Raise BenchmarkError for the first name that is neither registered nor a data spec (before any work)."""
    for n in names:
        if n not in BENCHMARKS and not _is_spec(n):
            raise BenchmarkError(f"unknown benchmark '{n}'; known: {', '.join(BENCHMARKS)} "
                                 f"(or 'toy:<split>', 'hf:<dataset id>', a .jsonl path, 'paper' for the paper's eight)")


# ------------------------------------------------------------------------------------------- hub row mapping

_PROBLEM_KEYS = ("problem", "question", "Problem", "Question", "prompt")
_ANSWER_KEYS = ("answer", "final_answer", "expected_answer", "Answer", "gt")
_ID_KEYS = ("id", "unique_id", "problem_idx", "idx", "ID")


def _clean_answer(value: Any) -> Any:
    """One scalar answer string from the shapes hubs use; returns the value unchanged when it cannot (so the common
    row check reports it)."""
    if isinstance(value, list) and len(value) >= 1 and all(isinstance(v, str) for v in value):
        value = ",".join(v.strip().strip("$") for v in value)  # OlympiadBench final_answer: ['$69$', '$84$']
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # amc23 stores 27.0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        s = value.strip()
        if "####" in s:  # GSM8K: worked solution, then '#### 1,234'
            s = s.rsplit("####", 1)[1].strip().replace(",", "")
        elif "\\boxed" in s and len(s) > 40:  # a full solution: its boxed answer
            s = last_boxed(s) or s
        if re.fullmatch(r"\$[^$]+\$", s):
            s = s[1:-1].strip()
        if re.fullmatch(r"-?\d+\.0+", s):
            s = s.split(".")[0]
        return s
    return value


def hub_row_to_record(row: dict[str, Any], index: int, name: str) -> dict[str, Any]:
    """Map one hub row to {id, problem, answer, ...extra fields}. Missing pieces stay missing (reported later)."""
    out: dict[str, Any] = {}
    problem = next((row[k] for k in _PROBLEM_KEYS if isinstance(row.get(k), str) and row[k].strip()), None)
    answer = next((row[k] for k in _ANSWER_KEYS if row.get(k) not in (None, "", [])), None)
    if answer is None and isinstance(row.get("solution"), str):
        answer = last_boxed(row["solution"])
    rid = next((row[k] for k in _ID_KEYS if row.get(k) not in (None, "")), None)
    out["id"] = f"{name}-{rid if rid is not None else index}"
    if problem is not None:
        out["problem"] = problem
    if answer is not None:
        out["answer"] = _clean_answer(answer)
    for k, v in row.items():
        if k not in _PROBLEM_KEYS and k not in _ANSWER_KEYS and k not in _ID_KEYS and isinstance(v, (str, int, float)):
            out.setdefault(k, v)
    out["source"] = f"hf:{name}"
    return out


def problems_from_hub_rows(spec: BenchmarkSpec, rows: Iterable[dict[str, Any]]) -> ProblemSet:
    """Map hub rows (dicts, e.g. from a `datasets.Dataset`) to problems; unusable rows land in `skipped`."""
    where = f"hf:{spec.hf_id}[{spec.hf_split}]"
    mapped = ((f"{where} row {i}", hub_row_to_record(dict(r), i, spec.name)) for i, r in enumerate(rows))
    return problems_from_rows(mapped, strict=False, source=f"hf:{spec.hf_id}")


def _load_hub(spec: BenchmarkSpec) -> ProblemSet:
    try:
        import datasets  # type: ignore
    except ImportError:
        raise BenchmarkError(f"{spec.name}: source='hub' needs the 'datasets' package: "
                             "pip install 'zerotir[hub]'") from None
    try:
        ds = datasets.load_dataset(spec.hf_id, spec.hf_config, split=spec.hf_split)
    except Exception as e:  # network / hub errors differ between versions
        raise BenchmarkError(f"{spec.name}: could not load hub dataset {spec.hf_id} split '{spec.hf_split}' "
                             f"({type(e).__name__}: {e})") from None
    return problems_from_hub_rows(spec, ds)


# ------------------------------------------------------------------------------------------------ loading


def load_benchmark(name: str, *, data_dir: str | Path | None = None, source: str = "auto", limit: int = 0,
                   seed: int = 0) -> Benchmark:
    """Load one benchmark by registry name (or data spec). source: 'auto' (local file, else a clear error naming
    it), 'local', or 'hub'. `limit` keeps the first N problems (0 = all)."""
    check_benchmark_names([name])
    if source not in ("auto", "local", "hub"):
        raise BenchmarkError(f"unknown benchmark source '{source}' (auto, local, hub)")
    try:
        if name not in BENCHMARKS:  # 'toy:<split>', 'hf:<id>', a JSONL path
            ps = load_problems(name, strict=False, seed=seed)
            title = name
        else:
            spec = BENCHMARKS[name]
            title = spec.title or name
            if source == "hub":
                ps = _load_hub(spec)
            else:
                root = Path(data_dir) if data_dir else default_benchmark_dir()
                if not root.is_dir():
                    raise BenchmarkError(f"benchmark data dir not found: {root} (set --data-dir or $ZEROTIR_DATA, "
                                         f"or use --source hub)")
                path = root / spec.file
                if not path.is_file():
                    raise BenchmarkError(f"{name}: file {path} not found in the data dir (or use --source hub)")
                ps = load_problems(str(path), strict=False)
    except DataError as e:
        raise BenchmarkError(f"{name}: {e}") from None
    problems = ps.problems[:limit] if limit and limit > 0 else ps.problems
    if not problems:
        raise BenchmarkError(f"{name}: no usable problems ({len(ps.skipped)} rows skipped"
                             + (f"; first: {ps.skipped[0]}" if ps.skipped else "") + ")")
    return Benchmark(name=name, problems=problems, skipped=ps.skipped, source=ps.source, title=title)
