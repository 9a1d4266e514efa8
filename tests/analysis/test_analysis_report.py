import json
import re

import pytest
from analysis_synth import write_run
from typer.testing import CliRunner

from zerotir.analysis.report import analyze, find_run_dirs
from zerotir.cli import app


def test_full_report_on_synthetic_runs(synthetic_runs, tmp_path):
    out = analyze(synthetic_runs, tmp_path / "report", n_boot=20, seed=0)
    assert out == tmp_path / "report"
    res = json.loads((out / "fits.json").read_text())
    labels = [g["label"] for g in res["groups"]]
    assert labels == ["rollout.max_tool_calls=2", "rollout.max_tool_calls=0 (no tools)"]
    tools, notools = res["groups"]
    assert tools["seeds"] == [0, 1] and tools["differs"] == {"rollout.max_tool_calls": 2}
    # tools: accuracy follows the saturating law it was generated from (c = 0.85, a = 0.8, b = 0.7)
    acc = tools["metrics"]["reward/accuracy"]
    assert acc["best"] == "saturating"
    sat = acc["fits"]["saturating"]
    for k, true in {"c": 0.85, "a": 0.8, "b": 0.7}.items():
        assert sat["ci"][k][0] <= true <= sat["ci"][k][1]
    per_seed = acc["per_seed"]
    assert set(per_seed) == {"tools-s0", "tools-s1"} and all(0.3 < p["b"] < 1.2 for p in per_seed.values())
    # length grows as 50 + 8·log x (a small-exponent power law fits it about as well, so only the CI is checked)
    ll = tools["metrics"]["rollout/response_tokens"]["fits"]["loglinear"]
    assert ll["ci"]["b"][0] <= 8.0 <= ll["ci"]["b"][1]
    # no tools: flat series → a note, no law
    assert notools["metrics"]["rollout/code_ratio"]["best"] is None
    assert notools["metrics"]["rollout/code_ratio"]["note"]
    final = {g["label"]: g["metrics"]["reward/accuracy"]["final"]["mean"] for g in res["groups"]}
    assert final[labels[0]] > 0.7 > final[labels[1]]
    # correlations present with raw and detrended values
    pair = next(c for c in tools["correlations"] if {c["a"], c["b"]} == {"reward/accuracy", "rollout/code_ratio"})
    assert pair["raw"]["spearman"] > 0.5 and pair["detrended"]["spearman"] is not None
    assert set(tools["per_run_correlations"]) == {"tools-s0", "tools-s1"}
    # metric not in any run → note; partial last line → note
    assert any("eval/tool_calls_per_response" in n for n in res["notes"])
    assert any("partially written" in n for n in res["notes"])
    assert res["headline"] and res["headline"][0]["group"] == labels[0]
    # files: plots exist and are referenced; HTML is self-contained
    md = (out / "report.md").read_text()
    refs = re.findall(r"\]\((plots/[^)]+\.png)\)", md)
    assert refs and all((out / r).is_file() and (out / r).stat().st_size > 1000 for r in refs)
    html = (out / "report.html").read_text()
    assert html.count("src='data:image/png;base64,") == len(refs)
    assert "src='plots/" not in html
    assert "Headline fits" in md and "saturating" in md
    # tools vs no tools: final accuracy difference over seeds with a Welch test
    diff = next(d for d in res["differences"] if d["metric"] == "reward/accuracy")
    assert diff["group"] == labels[1] and diff["diff"] < -0.6 and diff["p"] < 0.01
    assert set(res["x_offset"].values()) == {0.0}


def test_step_zero_rows_shift_x_and_are_fitted(tmp_path):
    runs = [write_run(tmp_path / f"s{s}", s, 2, steps=20, eval_every=4, base_row=True) for s in (0, 1)]
    res = json.loads((analyze(runs, tmp_path / "rep", n_boot=10, metrics=("eval/accuracy", "reward/accuracy"))
                      / "fits.json").read_text())
    # only the metrics logged at step 0 (the base eval) are shifted; training metrics keep x = step
    assert res["x_offset"]["eval/accuracy"] == 1.0 and res["x_offset"]["reward/accuracy"] == 0.0
    ev = res["groups"][0]["metrics"]["eval/accuracy"]
    assert ev["n"] == 12 and ev["x_range"] == [0.0, 20.0] and ev["x_offset"] == 1.0
    assert res["groups"][0]["metrics"]["reward/accuracy"]["x_offset"] == 0.0
    assert "step + 1" in (tmp_path / "rep" / "report.md").read_text()


def test_report_survives_short_constant_and_missing_series(tmp_path):
    short = tmp_path / "short"
    short.mkdir()
    (short / "metrics.jsonl").write_text('{"step": 1, "reward/accuracy": 0.1, "loss/entropy": 1.0}\n'
                                         '{"step": 2, "reward/accuracy": 0.2, "loss/entropy": 1.0}\n{"step": 3, "rew')
    flat = write_run(tmp_path / "flat", 0, 2, steps=12)
    lines = (flat / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    for r in rows:
        r["rollout/code_ratio"] = 1.0  # constant
    (flat / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = analyze([short, flat], tmp_path / "rep", n_boot=10,
                  metrics=("reward/accuracy", "rollout/code_ratio", "eval/accuracy"))
    res = json.loads((out / "fits.json").read_text())
    by = {g["label"]: g for g in res["groups"]}
    assert len(by) == 2  # the run without config.yaml is a group of its own
    s = by["short"]["metrics"]
    assert "only 2" in s["reward/accuracy"]["note"] and s["reward/accuracy"]["best"] is None
    assert s["eval/accuracy"]["note"] == "metric missing in this group"
    f = next(g for k, g in by.items() if k != "short")["metrics"]
    assert "constant" in f["rollout/code_ratio"]["note"]
    md = (out / "report.md").read_text()
    assert "no config.yaml" in md and "only 2" in md and (out / "report.html").is_file()


def test_find_run_dirs_expands_folders_and_names_bad_paths(synthetic_runs, tmp_path):
    assert len(find_run_dirs([tmp_path / "runs"])) == 4
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        find_run_dirs([tmp_path / "nowhere"])


def test_cli(synthetic_runs, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["analyze", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"), "--bootstrap", "5",
                            "-m", "reward/accuracy", "-m", "rollout/code_ratio"])
    assert r.exit_code == 0, r.output
    assert "saturating" in r.output and "report.html" in r.output
    assert json.loads((tmp_path / "rep" / "fits.json").read_text())["metrics"] == ["reward/accuracy",
                                                                                   "rollout/code_ratio"]
    bad = runner.invoke(app, ["analyze", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "not a run directory" in bad.output


def test_final_values_compare_at_the_common_horizon(tmp_path):
    from zerotir.analysis.report import final_value, horizon
    from zerotir.analysis.runs import group_runs, load_run

    runs = [load_run(write_run(tmp_path / "long", 0, 2, steps=30)), load_run(write_run(tmp_path / "short", 1, 2,
                                                                                          steps=10))]
    (g,) = group_runs(runs)  # constant LR: one group despite different lengths
    assert horizon(runs, "reward/accuracy") == 10.0
    at10 = final_value(g, "reward/accuracy", 10.0)
    # last 10% of 10 steps = step 10 of each seed
    expected = (runs[0].series["reward/accuracy"][10.0] + runs[1].series["reward/accuracy"][10.0]) / 2
    assert at10["n"] == 2 and at10["mean"] == pytest.approx(expected)
    assert at10["lo"] < at10["mean"] < at10["hi"]
    assert final_value(g, "eval/accuracy", 4.0)["n"] == 0  # no eval before step 5


def test_default_report_dir_is_inside_a_single_run_else_under_runs(tmp_path, monkeypatch):
    from zerotir.analysis.cli import default_report_dir

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "r1"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    assert default_report_dir([str(run)]) == str(run / "analysis")
    many = default_report_dir([str(run), str(tmp_path / "r2")])
    assert many.startswith("runs/analysis-")
    assert default_report_dir([str(tmp_path)]).startswith("runs/analysis-")   # a folder of runs
