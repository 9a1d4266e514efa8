import math

import pytest
from analysis_synth import write_run

from zerotir.analysis.runs import group_band, group_runs, load_run, pooled_points, rows_to_series
from zerotir.config import Config, save_config


def test_load_run_skips_partial_last_line(tmp_path):
    run = load_run(write_run(tmp_path / "r", seed=3, max_tool_calls=2, steps=12, partial_last_line=True))
    assert run.n_rows == 12
    assert sorted(run.series["reward/accuracy"]) == [float(s) for s in range(1, 13)]
    assert sorted(run.series["eval/accuracy"]) == [5.0, 10.0]
    assert run.config["train.seed"] == 3 and run.config["rollout.max_tool_calls"] == 2
    assert any("partially written" in n for n in run.notes)


def test_load_run_errors_and_fallbacks(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        load_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "reward/accuracy": 0.5}\n')
    run = load_run(tmp_path)
    assert run.config == {} and any("no config.yaml" in n for n in run.notes)
    # a config from another zerotir version (unknown key) is grouped on its raw YAML, with a note
    (tmp_path / "config.yaml").write_text("train:\n  seed: 1\n  future_knob: 3\n")
    run = load_run(tmp_path)
    assert run.config["train.future_knob"] == 3 and any("raw YAML" in n for n in run.notes)


def test_rows_to_series_rules():
    notes = []
    s = rows_to_series([{"step": 1, "a": 1.0, "b": "text", "c": True},
                        {"a": 2.0},                      # no step: its line number (2) is used
                        {"step": 1, "a": 5.0},           # repeated step (resumed run): last value wins
                        {"step": 3, "a": float("nan")}], notes)
    assert s == {"a": {1.0: 5.0, 2.0: 2.0}}
    assert notes and "without 'step'" in notes[0]


def test_grouping_by_config_except_seed(tmp_path):
    runs = [load_run(write_run(tmp_path / f"t{s}", s, 2, steps=6)) for s in (0, 1, 2)]
    runs += [load_run(write_run(tmp_path / f"n{s}", s, 0, steps=6)) for s in (0, 1)]
    runs.append(load_run(write_run(tmp_path / "b4", 0, 4, steps=6)))
    runs.append(load_run(write_run(tmp_path / "t3-short", 3, 2, steps=4)))  # constant LR: a shorter seed joins
    groups = group_runs(runs)
    assert [len(g.runs) for g in groups] == [4, 2, 1]
    assert groups[0].seeds == [0, 1, 2, 3]
    assert [g.label for g in groups] == ["rollout.max_tool_calls=2", "rollout.max_tool_calls=0 (no tools)",
                                         "rollout.max_tool_calls=4"]
    # a second differing key shows up in every label
    d = tmp_path / "lr"
    write_run(d, 0, 2, steps=6)
    cfg = Config()
    cfg.rollout.max_tool_calls = 2
    cfg.optim.lr = 3e-4
    cfg.train.steps = 6
    save_config(cfg, d / "config.yaml")
    labels = [g.label for g in group_runs(runs + [load_run(d)])]
    assert len(labels) == 4
    assert labels[0] == "rollout.max_tool_calls=2, optim.lr=0.0001"
    assert labels[-1] == "rollout.max_tool_calls=2, optim.lr=0.0003"
    # under a cosine schedule the run length changes the LR curve, so it splits groups
    for name, steps in (("c1", 6), ("c2", 8)):
        cfg = Config()
        cfg.optim.schedule, cfg.train.steps = "cosine", steps
        write_run(tmp_path / name, 0, 2, steps=steps)
        save_config(cfg, tmp_path / name / "config.yaml")
    cos = group_runs([load_run(tmp_path / "c1"), load_run(tmp_path / "c2")])
    assert [g.label for g in cos] == ["train.steps=6", "train.steps=8"]


def test_group_band_hand_computed(tmp_path):
    runs = []
    for i, vals in enumerate(([1.0, 2.0, 3.0], [3.0, 4.0])):
        d = tmp_path / f"r{i}"
        d.mkdir()
        cfg = Config()
        cfg.train.seed = i
        save_config(cfg, d / "config.yaml")
        (d / "metrics.jsonl").write_text("".join(f'{{"step": {s + 1}, "m": {v}}}\n' for s, v in enumerate(vals)))
        runs.append(load_run(d))
    (g,) = group_runs(runs)
    band = group_band(g, "m")
    assert band["step"].tolist() == [1, 2, 3]
    assert band["mean"].tolist() == [2.0, 3.0, 3.0]
    assert band["n"].tolist() == [2, 2, 1]
    half = 12.706204736174707 * math.sqrt(2.0) / math.sqrt(2)  # t(0.975, 1) · sd / √n, sd of (1, 3) = √2
    assert band["hi"][0] == pytest.approx(2.0 + half) and band["lo"][0] == pytest.approx(2.0 - half)
    assert math.isnan(band["lo"][2])
    x, y = pooled_points(g, "m")
    assert sorted(zip(x.tolist(), y.tolist())) == [(1, 1), (1, 3), (2, 2), (2, 4), (3, 3)]
