"""Result tables: one `ResultRow` per (tool budget, benchmark) → CSV and a Markdown table laid out like the paper's
(benchmarks as columns, then 'Avg' and 'Code ratio'; one row per tool budget, the paper's "Eval Env. Iter.").

Accuracy cells are avg@k in percent with one decimal; 'Avg' is the unweighted mean over the benchmark columns;
'Code ratio' is the unweighted mean over benchmarks of the share of responses with an executed call, in percent.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from zerotir.eval.metrics import FAILURE_KINDS
from zerotir.telemetry import EVAL_METRICS


@dataclass
class ResultRow:
    max_tool_calls: int
    benchmark: str
    title: str
    samples: int
    problems: int
    metrics: dict[str, float]
    """telemetry.EVAL_METRICS names (pass@k / maj@k at k = samples)."""
    pass_at: dict[int, float] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)
    failures: dict[str, float] = field(default_factory=dict)
    """Share of responses per eval.metrics.FAILURE_KINDS entry (empty when not computed)."""

    @classmethod
    def from_report(cls, report, *, benchmark: str, title: str, max_tool_calls: int) -> "ResultRow":
        return cls(max_tool_calls=max_tool_calls, benchmark=benchmark, title=title or benchmark,
                   samples=report.samples, problems=len(report.records), metrics=dict(report.metrics),
                   pass_at=dict(report.pass_at), extra=dict(report.extra), failures=dict(report.failures))

    def to_dict(self) -> dict:
        return {"max_tool_calls": self.max_tool_calls, "benchmark": self.benchmark, "title": self.title,
                "samples": self.samples, "problems": self.problems, "metrics": self.metrics,
                "pass_at": {str(k): v for k, v in self.pass_at.items()}, "extra": self.extra,
                "failures": self.failures}


def _pct(x: float) -> str:
    return f"{100.0 * x:.1f}"


def _benchmark_order(rows: Sequence[ResultRow]) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for r in rows:
        seen.setdefault(r.benchmark, r.title)
    return list(seen.items())


def averages(rows: Sequence[ResultRow], max_tool_calls: int) -> dict[str, float]:
    """Unweighted mean of every metric over the benchmarks evaluated at this tool budget."""
    sel = [r for r in rows if r.max_tool_calls == max_tool_calls]
    if not sel:
        return {}
    return {k: sum(r.metrics[k] for r in sel) / len(sel) for k in sel[0].metrics}


def markdown_table(rows: Sequence[ResultRow], *, title: str = "", note: str = "") -> str:
    """The paper-style table (+ a pass@k/maj@k table and a per-benchmark tool-metrics table)."""
    benches = _benchmark_order(rows)
    budgets = sorted({r.max_tool_calls for r in rows})
    cell = {(r.max_tool_calls, r.benchmark): r for r in rows}
    lines = []
    if title:
        lines += [f"## {title}", ""]
    if note:
        lines += [note, ""]
    head = ["Eval Env. Iter."] + [t for _, t in benches] + ["Avg", "Code ratio"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for b in budgets:
        vals = []
        for name, _ in benches:
            r = cell.get((b, name))
            vals.append(_pct(r.metrics["accuracy"]) if r else "–")
        avg = averages(rows, b)
        lines.append("| " + " | ".join([str(b)] + vals + [_pct(avg["accuracy"]), _pct(avg["code_ratio"])]) + " |")
    lines.append("")
    lines.append("Cells: avg@k accuracy (%); Avg and Code ratio are unweighted means over the benchmark columns.")

    lines += ["", "### pass@k / maj@k (%)", ""]
    head = ["Eval Env. Iter.", "metric"] + [t for _, t in benches]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---"] + ["---:"] * len(benches)) + "|"]
    for b in budgets:
        for key in ("pass@k", "maj@k"):
            vals, ks = [], set()
            for name, _ in benches:
                r = cell.get((b, name))
                vals.append(_pct(r.metrics[key]) if r else "–")
                if r:
                    ks.add(r.samples)
            label = key.replace("@k", "@" + "/".join(str(k) for k in sorted(ks))) if ks else key
            lines.append("| " + " | ".join([str(b), label] + vals) + " |")

    lines += ["", "### Tool use per benchmark", ""]
    head = ["Eval Env. Iter.", "benchmark", "problems", "k", "acc %", "code ratio %", "calls/resp", "tool err %",
            "timeout %", "resp tokens", "tool tokens", "trunc %"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|"]
    for b in budgets:
        for name, t in benches:
            r = cell.get((b, name))
            if not r:
                continue
            m = r.metrics
            lines.append("| " + " | ".join([
                str(b), t, str(r.problems), str(r.samples), _pct(m["accuracy"]), _pct(m["code_ratio"]),
                f"{m['tool_calls_per_response']:.2f}", _pct(m["tool_error_rate"]), _pct(m["tool_timeout_rate"]),
                f"{m['response_tokens']:.1f}", f"{m['tool_tokens']:.1f}", _pct(m["truncation_rate"])]) + " |")
    lines += failure_table([r for b in budgets for name, _ in benches if (r := cell.get((b, name)))])
    return "\n".join(lines) + "\n"


def failure_table(rows: Sequence[ResultRow]) -> list[str]:
    """Markdown lines: per (budget, benchmark), the share of responses of each failure kind (eval.metrics); none
    when no row has them."""
    rows = [r for r in rows if r.failures]
    if not rows:
        return []
    lines = ["", "### Why answers were wrong (% of responses)", "",
             "tool_error: the last call failed; no_answer: no final answer; text_wrong: wrong, no code run; "
             "answer_not_output: the answer is not what the last call printed; wrong_code: it is, and that is wrong.",
             ""]
    head = ["Eval Env. Iter.", "benchmark", *FAILURE_KINDS]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---"] + ["---:"] * len(FAILURE_KINDS)) + "|"]
    for r in rows:
        lines.append("| " + " | ".join([str(r.max_tool_calls), r.title, *(_pct(r.failures[k]) for k in FAILURE_KINDS)])
                     + " |")
    return lines


def csv_rows(rows: Sequence[ResultRow]) -> tuple[list[str], list[dict]]:
    """Header and dict rows: one per (budget, benchmark) plus an 'avg' row per budget. Raw fractions, not %."""
    ks = sorted({k for r in rows for k in r.pass_at})
    fails = [f"failure_{k}" for k in FAILURE_KINDS] if any(r.failures for r in rows) else []
    header = ["max_tool_calls", "benchmark", "problems", "samples", *EVAL_METRICS, *[f"pass@{k}" for k in ks], *fails]
    out = []
    for r in rows:
        d = {"max_tool_calls": r.max_tool_calls, "benchmark": r.benchmark, "problems": r.problems,
             "samples": r.samples, **{k: r.metrics[k] for k in EVAL_METRICS}}
        d.update({f"pass@{k}": v for k, v in r.pass_at.items()})
        d.update({f"failure_{k}": v for k, v in r.failures.items()})
        out.append(d)
    for b in sorted({r.max_tool_calls for r in rows}):
        avg = averages(rows, b)
        out.append({"max_tool_calls": b, "benchmark": "avg",
                    "problems": sum(r.problems for r in rows if r.max_tool_calls == b), "samples": "",
                    **{k: avg[k] for k in EVAL_METRICS}})
    return header, out


def write_csv(rows: Sequence[ResultRow], path: str | Path) -> None:
    header, data = csv_rows(rows)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header, restval="")
        w.writeheader()
        for d in data:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in d.items()})
