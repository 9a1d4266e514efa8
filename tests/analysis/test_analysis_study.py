import json
import re

import pytest
from analysis_synth import write_study_run
from typer.testing import CliRunner

from zerotir.analysis.study import analyze_study, preregister
from zerotir.cli import app

SIZES = (2e5, 1e6, 3e6)
BIG = 1e7


def _cell(study, n, seed, **kw):
    return write_study_run(study / "runs" / f"n{int(n)}-s{seed}", seed, n, steps=30, eval_every=3, **kw)


@pytest.mark.integration
def test_preregister_then_score_after_the_held_out_runs(tmp_path):
    study = tmp_path / "study"
    for n in SIZES:
        for s in (0, 1):
            _cell(study, n, s)
    # a killed run (metrics stop before train.steps) is not fitted
    killed = _cell(study, 1e6, 2)
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    (killed / "metrics.jsonl").write_text("\n".join(lines[:10]) + "\n")
    held = [f"n{int(BIG)}-s{s}" for s in (0, 1)]

    p = preregister(study, held, n_boot=20)
    doc = json.loads(p.read_text())
    assert p == study / "predictions.json"
    assert doc["held_out_runs"] == held and re.fullmatch(r"\d{4}-\d\d-\d\dT.*Z", doc["created"])
    assert doc["git_revision"] is None or re.fullmatch(r"[0-9a-f]{40}", doc["git_revision"])
    assert "n1000000-s2" not in doc["fitted_runs"] and len(doc["fitted_runs"]) == 6
    assert any("not finished" in n and "n1000000-s2" in n for n in doc["notes"])
    acc = next(e for e in doc["predictions"] if e["metric"] == "eval/accuracy")
    # the held-out size is unknown before its runs exist: the law is registered, not yet evaluated
    assert acc["ok"] and acc["N"] is None and "predicted" not in acc and "measured N" in acc["note"]
    assert acc["train_N"] == list(SIZES) and acc["a_law"] == "loglinear" and len(acc["draws"]) >= 10

    # with N given, the curve on a compute grid is registered too
    doc_n = json.loads(preregister(study, held, n_boot=20, n_params=BIG).read_text())
    pred = next(e for e in doc_n["predictions"] if e["metric"] == "eval/accuracy")["predicted"]
    assert pred["N"] == BIG and pred["C"][0] == 0.0 and len(pred["C"]) == len(pred["R"]) == 26
    assert set(pred["ci"]) == {"R0", "A", "C_mid", "B"}

    for s in (0, 1):  # the held-out runs happen after the registration
        _cell(study, BIG, s)
    report = analyze_study(study, n_boot=10)
    assert report == study / "report.md"
    res = json.loads((study / "fits.json").read_text())
    sig = res["sigmoid"]
    assert sig["x"] == "compute/flops" and sig["metrics"] == ["eval/accuracy", "eval/code_ratio",
                                                              "eval/response_tokens"]
    g = next(g for g in sig["groups"] if g["N"] == 3e6)
    fit = g["metrics"]["eval/accuracy"]["sigmoid"]
    assert fit["ok"] and fit["ci_method"].startswith("seed bootstrap (2 runs") and set(fit["ci"]) >= {"A", "C_mid"}
    ext = g["metrics"]["eval/accuracy"]["compute_extrapolation"]
    assert set(ext["errors"]) == {"sigmoid", "persistence", "mean", "power_law"}
    (fam,) = sig["families"]
    assert fam["N"] == [2e5, 1e6, 3e6, 1e7]
    m = fam["metrics"]["eval/accuracy"]
    assert m["cross_size"]["ok"] and "R(N, C)" in m["cross_size"]["formula"]
    assert m["cross_size"]["a_law"] == "saturating"
    assert m["size_extrapolation"]["held_out_N"] == 1e7 and "sigmoid" in m["size_extrapolation"]["errors"]
    scored = {e["metric"]: e for e in res["scored"]["entries"]}
    s_acc = scored["eval/accuracy"]
    assert s_acc["N_measured"] == BIG and s_acc["N_preregistered"] == BIG
    assert set(s_acc["score"]["errors"]) == {"sigmoid", "persistence", "mean", "power_law"}
    assert s_acc["score"]["train_N"] == list(SIZES)
    md = report.read_text()
    for title in ("Sigmoid law vs compute/flops", "Compute extrapolation", "Across sizes", "scored"):
        assert title in md
    refs = re.findall(r"\]\((plots/[^)]+\.png)\)", md)
    assert "plots/sigmoid_f0.png" in refs and "plots/cross_size_f0.png" in refs
    assert all((study / r).stat().st_size > 1000 for r in refs)
    html = (study / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(refs)


def test_study_without_runs_or_compute_gives_notes(tmp_path):
    empty = tmp_path / "empty"
    report = analyze_study(empty)
    assert "no run directory" in report.read_text()
    assert json.loads((empty / "fits.json").read_text())["groups"] == []
    # runs from before compute accounting: the compute axis has nothing, said so; step still works
    study = tmp_path / "old"
    d = _cell(study, 1e6, 0)
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    (d / "metrics.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if not k.startswith("compute/")})
                                             + "\n" for r in rows))
    analyze_study(study, n_boot=5)
    res = json.loads((study / "fits.json").read_text())
    assert res["sigmoid"]["groups"][0]["metrics"] == {} or not res["sigmoid"]["metrics"]
    assert any("no run logs 'compute/flops'" in n for n in res["sigmoid"]["notes"])
    analyze_study(study, n_boot=5, x="step")
    res = json.loads((study / "fits.json").read_text())
    assert res["sigmoid"]["groups"][0]["metrics"]["eval/accuracy"]["sigmoid"]["ok"]
    assert "residual bootstrap" in res["sigmoid"]["groups"][0]["metrics"]["eval/accuracy"]["sigmoid"]["ci_method"]
    # a corrupt predictions.json is a note, not a crash
    (study / "predictions.json").write_text("{not json")
    analyze_study(study, n_boot=5)
    assert "unreadable" in json.loads((study / "fits.json").read_text())["scored"]["note"]


def test_cli_x_axis(tmp_path):
    study = tmp_path / "s"
    for n in SIZES:
        _cell(study, n, 0)
    r = CliRunner().invoke(app, ["analyze", str(study / "runs"), "--out", str(tmp_path / "rep"), "--bootstrap", "5",
                                 "--x", "compute/flops", "-m", "eval/accuracy"])
    assert r.exit_code == 0, r.output
    assert "R(N, C)" in r.output and "report.html" in r.output
    res = json.loads((tmp_path / "rep" / "fits.json").read_text())
    assert res["x"] == "compute/flops" and res["sigmoid"]["families"][0]["N"] == list(SIZES)
    # the step-law fits run on the same axis: their x range is in FLOPs
    assert res["groups"][0]["metrics"]["eval/accuracy"]["x_range"][1] > 1e9


def test_correlations_on_a_compute_axis_pair_metrics_at_the_same_step(tmp_path):
    """Seeds reach different compute at the same step; the group-mean series for correlations are keyed by step,
    so every eval step aligns (keyed by compute, only step 0 would)."""
    study = tmp_path / "s"
    for s in (0, 1):
        _cell(study, SIZES[0], s)
    analyze_study(study, n_boot=5, metrics=("eval/accuracy", "eval/code_ratio"))
    (row,) = json.loads((study / "fits.json").read_text())["groups"][0]["correlations"]
    assert row["n"] > 5


def test_same_family_ignores_config_fields_added_after_registration():
    from zerotir.analysis.study import same_family

    registered = '{"algo.name": "grpo", "rollout.max_tool_calls": 2}'
    assert same_family('{"algo.name": "grpo", "rollout.max_tool_calls": 2, "sandbox.quotas": true}', registered)
    assert not same_family('{"algo.name": "grpo", "rollout.max_tool_calls": 0}', registered)
    assert not same_family('{"algo.name": "grpo"}', None)


def test_a_size_that_never_learns_is_reported_not_a_crash(tmp_path):
    """A size whose eval metrics are flat (toy-0.1m: accuracy 0 at every eval) gives compute-extrapolation errors
    of exactly 0 for persistence; the report says a baseline is exact instead of dividing by it."""
    study = tmp_path / "s"
    flat = {"R0": 0.0, "A": 0.0, "C_mid": 1e10, "B": 2.0}
    for s in (0, 1):
        d = _cell(study, 1e5, s, truth=flat, sd=0.0)
        _cell(study, SIZES[1], s)
        # one lucky early answer each (as toy-0.1m had): the first half is not constant, the second half is 0
        rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        for r in rows:
            if r["step"] in (3 + 3 * s, 6 + 3 * s):
                r["eval/accuracy"] = 1 / 64
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    analyze_study(study, n_boot=5, metrics=("eval/accuracy",))
    res = json.loads((study / "fits.json").read_text())
    g = next(g for g in res["sigmoid"]["groups"] if g["N"] == 1e5)
    errs = g["metrics"]["eval/accuracy"]["compute_extrapolation"]["errors"]
    assert errs["persistence"] == 0.0 and errs["sigmoid"] > 0
    assert "law does NOT beat the best baseline (a baseline is exact: flat series)" in (study / "report.md").read_text()


def test_verdict_against_exact_baselines():
    from zerotir.analysis.lawreport import _verdict

    assert _verdict({"sigmoid": 0.01, "persistence": 0.02, "mean": 0.04}) == "law beats all baselines (0.50× the best)"
    assert _verdict({"sigmoid": 0.03, "persistence": 0.02, "mean": None}).startswith("law does NOT beat")
    assert "a baseline is exact" in _verdict({"sigmoid": 0.01, "persistence": 0.0})
    assert _verdict({"sigmoid": 0.0, "persistence": 0.0}).endswith("the law ties it")
    assert _verdict({"sigmoid": None, "persistence": 0.0}) == "–"
