"""`check_model_dir`: a checkpoint or a run directory names its trained policy; anything else fails naming what is
missing."""

import pytest

from zerotir.models import ModelError, check_model_dir


def _fake_policy(d, complete=True):
    d.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (d / name).write_text("{}")
    if complete:   # a checkpoint is complete once its state.json is written
        (d.parent / "state.json").write_text("{}")
    return d


def test_checkpoint_and_run_dirs_resolve_to_the_newest_policy(tmp_path):
    run = tmp_path / "run"
    _fake_policy(run / "checkpoints" / "step_000005" / "policy")
    newest = _fake_policy(run / "checkpoints" / "step_000025" / "policy")
    _fake_policy(run / "checkpoints" / "step_000030" / "policy", complete=False)   # still being written
    assert check_model_dir(run) == newest
    assert check_model_dir(run / "checkpoints" / "step_000005") == run / "checkpoints" / "step_000005" / "policy"
    assert check_model_dir(newest) == newest


def test_a_directory_without_a_model_names_what_it_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json .*checkpoints/step_\\*/policy"):
        check_model_dir(tmp_path / "empty")
    broken = _fake_policy(tmp_path / "run" / "checkpoints" / "step_000001" / "policy")
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="policy: no tokenizer files"):
        check_model_dir(tmp_path / "run")
