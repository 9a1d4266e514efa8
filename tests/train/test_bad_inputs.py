"""Bad inputs fail with one clear error naming the file/row/field, before any run directory or model is created."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from zerotir.data import DataError
from zerotir.models import ModelError
from zerotir.train.loop import train

from .conftest import tiny_cfg


def _data(tmp_path, rows):
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_row_missing_answer_names_file_line_field(tiny_model_dir, tmp_path):
    p = _data(tmp_path, [{"id": "a", "problem": "1+1?", "answer": "2"}, {"id": "b", "problem": "2+2?"}])
    cfg = tiny_cfg(tiny_model_dir, data__train=str(p), data__eval="")
    with pytest.raises(DataError, match=r"d\.jsonl:2: field 'answer'"):
        train(cfg, run_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_unreadable_file_and_model_without_tokenizer(tiny_model_dir, tmp_path):
    good = _data(tmp_path, [{"id": "a", "problem": "1+1?", "answer": "2"}])
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        train(tiny_cfg(tiny_model_dir, data__train=str(tmp_path / "nope.jsonl")), run_dir=str(tmp_path / "r1"))
    bare = tmp_path / "bare-model"
    bare.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.name in ("config.json", "model.safetensors"):
            shutil.copy(f, bare / f.name)
    with pytest.raises(ModelError, match="no tokenizer"):
        train(tiny_cfg(bare, data__train=str(good), data__eval=str(good)), run_dir=str(tmp_path / "r2"))
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_cli_prints_one_error_line(tiny_model_dir, tmp_path):
    from zerotir.cli import app

    p = _data(tmp_path, [{"id": "a", "problem": "", "answer": "2"}])
    res = CliRunner().invoke(app, ["train", "--set", f"model.path={tiny_model_dir}", "--set", f"data.train={p}",
                                   "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "error:" in res.output and "field 'problem' is missing or empty" in res.output
    res = CliRunner().invoke(app, ["train", "--set", "train.nope=1"])
    assert res.exit_code == 2 and "unknown config key 'train.nope'" in res.output


def test_backend_ray_hands_resume_and_run_dir_to_the_loop_with_the_ray_backend(tmp_path, monkeypatch):
    """`zerotir train --backend ray` calls THE loop with the Ray backend and resume/run_dir, and prints the run dir
    it returns (the training itself is covered by tests/distributed)."""
    import zerotir.distributed
    import zerotir.train.loop
    from zerotir.cli import app

    calls = []

    def fake_train(cfg, resume=False, run_dir=None, backend_factory=None):  # records the wiring only
        calls.append((cfg.train.backend, cfg.train.learners, run_dir, resume))
        assert backend_factory == "RAY"
        return tmp_path / "the-run"

    monkeypatch.setattr(zerotir.distributed, "ray_backend", lambda: "RAY")
    monkeypatch.setattr(zerotir.train.loop, "train", fake_train)
    res = CliRunner().invoke(app, ["train", "--backend", "ray", "--learners", "2", "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert calls == [("ray", 2, str(tmp_path / "r"), False)]
    assert f"run dir: {tmp_path / 'the-run'}" in res.output
    res = CliRunner().invoke(app, ["train", "--backend", "ray", "--resume", str(tmp_path / "old")])
    assert res.exit_code == 0, res.output
    assert calls[-1][2:] == (None, str(tmp_path / "old"))


def test_sandbox_that_cannot_start_fails_in_one_line_before_any_model_loads_and_leaves_no_run_dir(tmp_path):
    """A bad sandbox.isolation value: exit code 2, one line naming it, and no run dir (so --run-dir can be reused)."""
    from zerotir.cli import app

    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--run-dir", str(run), "--set", "sandbox.isolation=bogus",
                                   "--set", "train.steps=1"])
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and "bogus" in res.output and "Traceback" not in res.output
    assert not run.exists()
