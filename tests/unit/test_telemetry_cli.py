
import pytest
from typer.testing import CliRunner

from zerotir import __version__
from zerotir.cli import app
from zerotir.config import load_config
from zerotir.telemetry import MetricsWriter, is_known_metric, make_run_dir, read_metrics


def test_metrics_writer_enforces_vocabulary(tmp_path):
    w = MetricsWriter(tmp_path)
    w.write({"step": 1, "reward/accuracy": 0.5, "rollout/code_ratio": 0.25, "eval/math500/accuracy": 0.1})
    with pytest.raises(KeyError, match="reward/acc"):
        w.write({"reward/acc": 1.0})
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows == [{"step": 1, "reward/accuracy": 0.5, "rollout/code_ratio": 0.25, "eval/math500/accuracy": 0.1}]
    assert is_known_metric("eval/aime24/pass@16") and not is_known_metric("eval/aime24/bogus")


def test_run_dir_holds_resolved_config(tmp_path):
    cfg = load_config("toy", ["train.seed=3"])
    d = make_run_dir(str(tmp_path / "{name}-x"), "t", cfg)
    assert (d / "config.yaml").is_file()
    assert load_config(d / "config.yaml").train.seed == 3
    (d / "metrics.jsonl").write_text("{}")
    d2 = make_run_dir(str(tmp_path / "{name}-x"), "t", cfg)
    assert d2 != d


def test_cli_help_and_version():
    r = CliRunner().invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("train", "eval", "sandbox", "analyze", "demo", "models"):
        assert cmd in r.output
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output


def test_cli_config_errors_are_one_line():
    r = CliRunner().invoke(app, ["config", "toy", "--set", "algo.bogus=1"])
    assert r.exit_code == 2
    assert "unknown config key 'algo.bogus'" in r.output
    r = CliRunner().invoke(app, ["config", "toy", "--set", "train.steps=5"])
    assert r.exit_code == 0 and "steps: 5" in r.output


def test_plain_log_lines_follow_the_current_stderr(monkeypatch):
    """The plain handler writes to whatever sys.stderr is now: a harness that swapped stderr and closed the old
    stream (pytest's capture between tests) must not turn later log lines into logging errors."""
    import io
    import logging
    import sys

    from zerotir.telemetry import _StderrHandler

    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    handler.emit(logging.makeLogRecord({"msg": "one"}))
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    handler.emit(logging.makeLogRecord({"msg": "two"}))
    assert second.getvalue() == "two\n"
