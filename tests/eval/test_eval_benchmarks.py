"""The benchmark registry on the shared JSONL files, hub-row mapping on local files, and the errors users see."""

import json

import pytest

from zerotir.eval import benchmarks as B

# Row counts of ../shared/data/benchmarks (see its README).
EXPECTED_ROWS = {"aime24": 30, "aime25": 30, "hmmt_feb_2024": 30, "hmmt_feb_2025": 30, "cmimc25": 40, "amc23": 40,
                 "math500": 500, "olympiadbench": 675, "gsm8k": 1319, "minerva_math": 272}


def test_every_registered_benchmark_loads(shared_data):
    assert set(B.BENCHMARKS) == set(EXPECTED_ROWS)
    for name, rows in EXPECTED_ROWS.items():
        b = B.load_benchmark(name, data_dir=shared_data / "benchmarks")
        assert len(b.problems) == rows, name
        assert b.skipped == []
        assert all(p.prompt and p.answer for p in b.problems)
    math500 = B.load_benchmark("math500", data_dir=shared_data / "benchmarks", limit=3)
    assert [p.id for p in math500.problems][0] == "test/precalculus/807.json"
    assert math500.problems[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert len(math500.problems) == 3 and math500.title == "MATH500"


def test_rows_without_answers_are_reported(tmp_path):
    d = tmp_path / "bench"
    d.mkdir()
    rows = [{"id": "a", "problem": "1+1?", "answer": "2"}, {"id": "b", "problem": "2+2?", "answer": ""},
            {"id": "c", "problem": "", "answer": "3"}, {"id": "d", "problem": "3+3?", "answer": "6"}]
    (d / "amc23.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    b = B.load_benchmark("amc23", data_dir=d)
    assert [p.id for p in b.problems] == ["a", "d"]
    assert len(b.skipped) == 2
    assert "amc23.jsonl:2" in b.skipped[0] and "answer" in b.skipped[0]
    assert "amc23.jsonl:3" in b.skipped[1] and "problem" in b.skipped[1]


def test_clear_errors(tmp_path):
    with pytest.raises(B.BenchmarkError, match="unknown benchmark 'aime2024'.*aime24.*math500"):
        B.load_benchmark("aime2024", data_dir=tmp_path)
    with pytest.raises(B.BenchmarkError, match="data dir not found"):
        B.load_benchmark("math500", data_dir=tmp_path / "nope")
    with pytest.raises(B.BenchmarkError, match="math500.jsonl not found"):
        B.load_benchmark("math500", data_dir=tmp_path)
    (tmp_path / "math500.jsonl").write_text('{"id": 1, "problem": "x", "answer": ""}\n')
    with pytest.raises(B.BenchmarkError, match="no usable problems"):
        B.load_benchmark("math500", data_dir=tmp_path)


def test_parse_benchmark_list():
    assert B.parse_benchmark_list("math500, aime24,math500") == ["math500", "aime24"]
    assert B.parse_benchmark_list("paper") == B.PAPER_BENCHMARKS
    with pytest.raises(B.BenchmarkError):
        B.parse_benchmark_list(" , ")


def test_jsonl_path_as_benchmark(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_text('{"id": "q1", "problem": "What is 2+3?", "answer": "5"}\n')
    b = B.load_benchmark(str(p))
    assert [(x.id, x.answer) for x in b.problems] == [("q1", "5")]


def test_hub_row_mapping_through_datasets_on_local_files(tmp_path):
    """Rows shaped like the hub datasets (GSM8K '####', OlympiadBench lists, amc23 floats, MATH solutions) are
    loaded with the real `datasets` JSON loader from local files and mapped to problems."""
    datasets = pytest.importorskip("datasets")
    cases = {
        "gsm8k": ([{"question": "Janet has 3 apples...", "answer": "She has 3*2=6\n#### 1,206"}], "1206"),
        "olympiadbench": ([{"id": 1606, "question": "Find all pairs.", "final_answer": ["$69$", "$84$"]}], "69,84"),
        "amc23": ([{"id": 0, "question": "How many miles?", "answer": 27.0}], "27"),
        "minerva_math": ([{"problem": "Diameter?", "solution": "So it is $\\boxed{1.6}$ cm, as computed above."}],
                         "1.6"),
        "aime25": ([{"problem_idx": 1, "problem": "Find the sum of bases.", "answer": 70}], "70"),
    }
    for name, (rows, answer) in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows + [{"question": "no answer here"}]))
        ds = datasets.load_dataset("json", data_files=str(path), split="train")
        ps = B.problems_from_hub_rows(B.BENCHMARKS[name], ds)
        assert [p.answer for p in ps.problems] == [answer], name
        assert ps.problems[0].id.startswith(f"{name}-")
        assert len(ps.skipped) == 1 and "row 1" in ps.skipped[0], name


def test_solution_rows_use_the_last_box():
    """A hub row with only a worked solution: its answer is the solution's last box (reward.extract.last_boxed)."""
    row = {"problem": "Half of one?", "solution": "First \\boxed{1}, then halve: \\boxed{\\frac{1}{2}} end."}
    assert B.hub_row_to_record(row, 0, "math")["answer"] == "\\frac{1}{2}"
    assert "answer" not in B.hub_row_to_record({"problem": "p", "solution": "no box"}, 1, "math")
