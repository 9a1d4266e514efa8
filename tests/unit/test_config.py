import dataclasses

import pytest

from zerotir.config import (Config, ConfigError, config_from_dict, describe_config, field_docs, load_config,
                            save_config)


def test_defaults_and_presets_load():
    assert load_config().algo.name == "reinforce_pp_baseline"
    paper = load_config("paper")
    assert paper.rollout.n_samples == 16
    assert paper.rollout.temperature == 1.0
    assert paper.rollout.max_tool_calls == 2 and paper.eval.max_tool_calls == 2
    assert paper.algo.kl_coef == 0.0
    assert (paper.algo.clip_low, paper.algo.clip_high) == (0.2, 0.28)
    assert "Qwen2.5" in paper.model.path
    assert load_config("toy").model.path == "toy"
    # The paper's models get the warm math stack; the toy world's code needs none of it (cheaper forks).
    assert "sympy" in paper.sandbox.preimport and load_config("toy").sandbox.preimport == []
    assert load_config("toy", ["sandbox.preimport=[numpy]"]).sandbox.preimport == ["numpy"]
    # Deterministic rollouts are opt-in: their fixed thread count is many times slower on a busy CPU (README).
    assert not load_config("toy").rollout.deterministic and not paper.rollout.deterministic


def test_dotted_overrides_are_typed():
    cfg = load_config("toy", ["algo.name=grpo", "rollout.max_tool_calls=4", "optim.lr=3e-4",
                              "eval.benchmarks=[aime24,math500]", "rollout.stateful_tools=false"])
    assert cfg.algo.name == "grpo"
    assert cfg.rollout.max_tool_calls == 4
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.eval.benchmarks == ["aime24", "math500"]
    assert cfg.rollout.stateful_tools is False


@pytest.mark.parametrize("override, needle", [
    ("algo.nme=grpo", "unknown config key 'algo.nme'"),
    ("nosuch.x=1", "unknown config key 'nosuch'"),
    ("rollout.max_tool_calls=two", "config key 'rollout.max_tool_calls': expected an integer"),
    ("rollout.temperature=hot", "config key 'rollout.temperature': expected a number"),
    ("rollout.stateful_tools=maybe", "config key 'rollout.stateful_tools': expected true/false"),
    ("algo=3", "config section 'algo': expected a mapping"),
    ("novalue", "expected key=value"),
])
def test_override_errors_name_the_key(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("algo: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml.*not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("train:\n  steps: 1.5\n")
    with pytest.raises(ConfigError, match="'train.steps': expected an integer"):
        load_config(wrong)


def test_roundtrip_through_yaml(tmp_path):
    cfg = load_config("toy", ["train.seed=7"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg


def test_every_field_has_a_docstring():
    cfg = Config()
    for sec in dataclasses.fields(cfg):
        cls = type(getattr(cfg, sec.name))
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not missing, f"{sec.name}: fields without docstring: {missing}"
    assert "rollout.max_tool_calls = 2" in describe_config()


def test_partial_dict():
    cfg = config_from_dict({"train": {"steps": 3}})
    assert cfg.train.steps == 3 and cfg.rollout.n_samples == Config().rollout.n_samples
