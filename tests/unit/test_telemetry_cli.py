
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
