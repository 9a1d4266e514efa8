"""The loop's periodic eval over data.eval and data.eval_extra: names, renaming, and bad settings."""

import pytest

from zerotir.records import EvalResult
from zerotir.telemetry import is_known_metric
from zerotir.train.phases import eval_set_name, eval_sets


def test_extra_set_names_fit_the_metric_vocabulary():
    assert eval_set_name("toy:ood-wording") == "ood-wording"
    assert eval_set_name("data/bench/aime24.jsonl") == "aime24"
    assert eval_set_name("hf:org/ds:main") == "main"
    assert eval_set_name("hf:org/ds") == "org_ds"
    assert all(is_known_metric(f"eval/{eval_set_name(s)}/accuracy") for s in ("toy:ood-size", "x/y.jsonl", "hf:a/b"))


def test_eval_sets_renames_each_set_under_its_prefix_and_sums_time():
    calls = []

    def evaluate(problems, step):
        calls.append((tuple(problems), step))
        return EvalResult(metrics={"eval/accuracy": len(problems) / 10, "eval/pass@1": 0.5}, seconds=1.5)

    res = eval_sets(evaluate, {"eval/": ["a", "b"], "eval/ood/": ["c"]}, step=7)
    assert calls == [(("a", "b"), 7), (("c",), 7)]
    assert res.metrics == {"eval/accuracy": 0.2, "eval/pass@1": 0.5, "eval/ood/accuracy": 0.1,
                           "eval/ood/pass@1": 0.5}
    assert res.seconds == 3.0


def test_extra_sets_need_distinct_names_and_a_main_set(tiny_model_dir, tmp_path):
    from zerotir.train.loop import validate_inputs

    from .conftest import tiny_cfg

    data = tmp_path / "p.jsonl"
    data.write_text('{"id": "a", "problem": "1+1?", "answer": "2"}\n')
    other = tmp_path / "sub"
    other.mkdir()
    (other / "p.jsonl").write_text(data.read_text())
    cfg = tiny_cfg(tiny_model_dir, data__train=str(data), data__eval=str(data), data__eval_extra=[str(data)])
    train_set, sets = validate_inputs(cfg)
    assert list(sets) == ["eval/", "eval/p/"] and len(sets["eval/p/"]) == 1
    cfg.data.eval_extra = [str(data), str(other / "p.jsonl")]
    with pytest.raises(ValueError, match="data.eval_extra: two sets share a name"):
        validate_inputs(cfg)
    cfg.data.eval, cfg.data.eval_extra = "", [str(data)]
    with pytest.raises(ValueError, match="data.eval_extra needs data.eval"):
        validate_inputs(cfg)
