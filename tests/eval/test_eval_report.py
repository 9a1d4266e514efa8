"""summarize() and the result tables on a fixed set of sample records (numbers worked out by hand)."""

import csv

import pytest

from zerotir.eval.core import combine, summarize
from zerotir.eval.metrics import FAILURE_KINDS, failure_kind, failure_shares
from zerotir.eval.report import ResultRow, markdown_table, write_csv
from zerotir.telemetry import EVAL_METRICS, MetricsWriter, read_metrics
from zerotir.types import Problem


def fixed_samples(make_traj):
    """Two problems x 4 samples.
    p1 (gold 7): answers 7,7,5,None; correct T,T,F,F; samples 0 and 2 ran one tool call each.
    p2 (gold 3): answers 4,4,3,None; correct F,F,T,F; no tools; sample 3 truncated."""
    problems = [Problem("p1", "What is 3+4?", "7"), Problem("p2", "What is 1+2?", "3")]
    t = [
        make_traj("p1", sampled=4, tool_blocks=(2,), statuses=("ok",), answer="7", correct=True, sample_index=0),
        make_traj("p1", sampled=6, answer="7", correct=True, sample_index=1),
        make_traj("p1", sampled=4, tool_blocks=(2,), statuses=("error",), answer="5", sample_index=2),
        make_traj("p1", sampled=8, answer=None, sample_index=3),
        make_traj("p2", sampled=6, answer="4", sample_index=0),
        make_traj("p2", sampled=6, answer="4", sample_index=1),
        make_traj("p2", sampled=6, answer="3", correct=True, sample_index=2),
        make_traj("p2", sampled=10, answer=None, finish="length", sample_index=3),
    ]
    return problems, t


def test_summarize_fixed_records(make_traj):
    problems, trajs = fixed_samples(make_traj)
    rep = summarize(problems, list(reversed(trajs)), samples=4)  # order of arrival must not matter
    m = rep.metrics
    assert set(m) == set(EVAL_METRICS)
    assert m["accuracy"] == pytest.approx((2 / 4 + 1 / 4) / 2)                 # 0.375
    # pass@2: p1 1 - C(2,2)/C(4,2) = 5/6; p2 1 - C(3,2)/C(4,2) = 1/2
    assert rep.pass_at[2] == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert rep.pass_at[1] == pytest.approx(m["accuracy"])
    assert m["pass@k"] == rep.pass_at[4] == pytest.approx(1.0)
    # maj: p1 votes 7 (2) vs 5 (1) → correct; p2 votes 4 (2) vs 3 (1) → wrong
    assert m["maj@k"] == pytest.approx(0.5)
    assert [r.majority_answer for r in rep.records] == ["7", "4"]
    assert m["code_ratio"] == pytest.approx(2 / 8)
    assert m["tool_calls_per_response"] == pytest.approx(2 / 8)
    assert m["tool_error_rate"] == pytest.approx(1 / 2)
    assert m["response_tokens"] == pytest.approx((5 + 6 + 5 + 8 + 6 + 6 + 6 + 10) / 8)
    assert m["tool_tokens"] == pytest.approx(4 / 8)
    assert m["truncation_rate"] == pytest.approx(1 / 8)
    assert rep.extra["answer_rate"] == pytest.approx(6 / 8)
    assert [t.sample_index for t in rep.trajectories[:4]] == [0, 1, 2, 3]


def test_failure_kinds_fixed_records(make_traj):
    problems, trajs = fixed_samples(make_traj)
    # p1: correct, correct, error call (tool_error), no answer; p2: text 4, text 4 (text_wrong), correct, truncated
    assert [failure_kind(t) for t in trajs] == ["correct", "correct", "tool_error", "no_answer",
                                                "text_wrong", "text_wrong", "correct", "no_answer"]
    assert summarize(problems, trajs, samples=4).failures == {
        "correct": 3 / 8, "tool_error": 1 / 8, "no_answer": 2 / 8, "text_wrong": 2 / 8, "answer_not_output": 0.0,
        "wrong_code": 0.0}


def test_failure_kinds_compare_the_answer_with_the_last_printed_line(make_traj):
    def ran(output, answer, statuses=("ok",)):
        t = make_traj(tool_blocks=(2,) * len(statuses), statuses=statuses, answer=answer)
        t.tool_calls[-1].output = output
        return failure_kind(t)

    assert ran("1", "1") == "wrong_code"                     # answer = what it printed, and wrong
    assert ran("1", "2") == "answer_not_output"              # a copying slip
    assert ran("steps\n 42 \n\n", "$42$.") == "wrong_code"   # last non-empty line, normalised both sides
    assert ran("", "2") == "answer_not_output"               # printed nothing
    assert ran("42", "42", statuses=("error", "ok")) == "wrong_code"   # judged by the last call
    assert ran("Traceback", "42", statuses=("ok", "timeout")) == "tool_error"
    assert ran("Traceback", None, statuses=("error",)) == "tool_error"     # the call failed, then no answer
    assert ran("42", None) == "no_answer"
    assert failure_shares([]) == dict.fromkeys(FAILURE_KINDS, 0.0)


def test_summarize_refuses_incomplete(make_traj):
    problems, trajs = fixed_samples(make_traj)
    with pytest.raises(ValueError, match="problem 'p2': 3 scored samples, expected 4"):
        summarize(problems, trajs[:-1], samples=4)


def test_metric_row_is_in_vocabulary(make_traj, tmp_path):
    problems, trajs = fixed_samples(make_traj)
    rep = summarize(problems, trajs, samples=4)
    row = rep.metric_row("eval/math500/")
    assert row["eval/math500/accuracy"] == pytest.approx(0.375)
    assert row["eval/math500/pass@2"] == pytest.approx(2 / 3)
    assert "eval/math500/maj@4" in row and "eval/math500/tool_timeout_rate" in row
    w = MetricsWriter(tmp_path)
    w.write({"step": 1, **row, **rep.metric_row("eval/")})   # raises on an unknown name
    assert read_metrics(tmp_path / "metrics.jsonl")[0]["eval/accuracy"] == pytest.approx(0.375)


def _rows(make_traj):
    problems, trajs = fixed_samples(make_traj)
    rep = summarize(problems, trajs, samples=4)
    # a second benchmark: 1 problem x 4, all correct, one timed-out call each (3 + 1 sampled tokens, 1 tool token)
    p3 = [Problem("q", "x", "1")]
    t3 = [make_traj("q", sampled=3, tool_blocks=(1,), statuses=("timeout",), answer="1", correct=True,
                    sample_index=i) for i in range(4)]
    rep2 = summarize(p3, t3, samples=4)
    rows = [ResultRow.from_report(rep, benchmark="math500", title="MATH500", max_tool_calls=2),
            ResultRow.from_report(rep2, benchmark="aime24", title="AIME24", max_tool_calls=2)]
    rows.append(ResultRow(0, "math500", "MATH500", 4, 2, {**rep.metrics, "accuracy": 0.25, "code_ratio": 0.0}))
    return rows, rep, rep2


def test_markdown_table_fixed_records(make_traj):
    rows, rep, rep2 = _rows(make_traj)
    md = markdown_table(rows, title="toy @ k=4")
    lines = md.splitlines()
    assert lines[0] == "## toy @ k=4"
    head = next(i for i, l in enumerate(lines) if l.startswith("| Eval Env. Iter."))
    assert lines[head] == "| Eval Env. Iter. | MATH500 | AIME24 | Avg | Code ratio |"
    # budget 0: only MATH500 evaluated; budget 2: (37.5 + 100) / 2 = 68.75 → 68.8; code (25 + 100) / 2 = 62.5
    assert lines[head + 2] == "| 0 | 25.0 | – | 25.0 | 0.0 |"
    assert lines[head + 3] == "| 2 | 37.5 | 100.0 | 68.8 | 62.5 |"
    assert "| 2 | pass@4 | 100.0 | 100.0 |" in md
    assert "| 2 | maj@4 | 50.0 | 100.0 |" in md
    assert "| 2 | AIME24 | 1 | 4 | 100.0 | 100.0 | 1.00 | 0.0 | 100.0 | 4.0 | 1.0 | 0.0 |" in md
    # failures: MATH500 at budget 2 as in test_failure_kinds_fixed_records; the hand-made budget-0 row has none
    assert "| 2 | MATH500 | 37.5 | 12.5 | 25.0 | 25.0 | 0.0 | 0.0 |" in md
    assert "| 2 | AIME24 | 100.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 |" in md and "| 0 | MATH500 | 37.5" not in md
    assert combine({"a": rep, "b": rep2})["accuracy"] == pytest.approx(0.6875)


def test_csv_fixed_records(make_traj, tmp_path):
    rows, _, _ = _rows(make_traj)
    write_csv(rows, tmp_path / "r.csv")
    data = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert [(d["max_tool_calls"], d["benchmark"]) for d in data] == [
        ("2", "math500"), ("2", "aime24"), ("0", "math500"), ("0", "avg"), ("2", "avg")]
    assert float(data[0]["accuracy"]) == pytest.approx(0.375)
    assert float(data[0]["pass@2"]) == pytest.approx(2 / 3)
    assert float(data[4]["accuracy"]) == pytest.approx(0.6875)
    assert set(EVAL_METRICS) <= set(data[0])
