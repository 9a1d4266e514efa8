"""Study specs: cell names and order, the shipped specs, and every malformed spec failing with its key named."""

from pathlib import Path

import pytest
import yaml

from zerotir.config import BUILTIN_CONFIGS
from zerotir.study.spec import Cell, SpecError, cell_name, key_labels, load_spec, parse_spec

BASE = {"name": "s", "base": "toy"}


def parse(**extra):
    return parse_spec(Path("spec.yaml"), {**BASE, **extra})


def test_grid_is_the_product_in_order_with_readable_names():
    s = parse(grid={"model.path": ["toy", "/x/y/toy-3m"], "train.seed": [0, 1]}, overrides={"train.steps": 3})
    assert [c.name for c in s.cells] == ["size=toy,seed=0", "size=toy,seed=1", "size=toy-3m,seed=0",
                                         "size=toy-3m,seed=1"]
    cfg = s.resolve(s.cells[3])
    assert (cfg.model.path, cfg.train.seed, cfg.train.steps) == ("/x/y/toy-3m", 1, 3)
    assert cfg.rollout.template == "toy"  # the base preset underneath
    assert s.held_out == ["size=toy-3m,seed=0", "size=toy-3m,seed=1"]  # default: the last size of `grid`


def test_grids_and_cells_add_cells_and_the_own_keys_name_them():
    s = parse(grid={"train.seed": [0]}, grids=[{"train.seed": [0], "rollout.max_tool_calls": [0],
                                               "eval.max_tool_calls": [0]}],
              cells=[{"algo.name": "grpo"}])
    assert [c.name for c in s.cells] == ["seed=0", "seed=0,rollout.max_tool_calls=0,eval.max_tool_calls=0",
                                         "name=grpo"]
    assert s.held_out == []


def test_labels():
    assert key_labels(["a.x", "b.x", "c.y", "model.path"], {"c.y": "why"}) == {
        "a.x": "a.x", "b.x": "b.x", "c.y": "why", "model.path": "size"}
    labels = {"k": "k"}
    assert cell_name([("k", True)], labels) == "k=true"
    assert cell_name([("k", "a b/c d")], labels) == "k=c_d"
    assert cell_name([("k", [1, 2])], labels) == "k=1_2"


def test_values_survive_the_override_round_trip():
    """A YAML string that looks like a number stays a string; floats and lists keep their type."""
    c = Cell("x", (("train.name", "1"), ("optim.lr", 3e-4), ("rollout.stop_strings", ["a: b", "c"])))
    s = parse(cells=[dict(c.own)])
    cfg = s.resolve(s.cells[0])
    assert cfg.train.name == "1" and cfg.optim.lr == 3e-4 and cfg.rollout.stop_strings == ["a: b", "c"]


@pytest.mark.parametrize("extra, needle", [
    ({"gird": {"train.seed": [0]}}, "spec.yaml: gird: unknown key"),
    ({"grid": {"train.stepz": [1]}}, "unknown config key 'train.stepz'"),
    ({"grid": {"train.steps": ["many"]}}, "config key 'train.steps': expected an integer"),
    ({"grid": {"train.seed": []}}, "grid.train.seed: empty axis"),
    ({"grid": {"train.seed": 3}}, "grid.train.seed: an axis is a list"),
    ({"grid": {}}, "grid: a grid needs at least one axis"),
    ({"grid": {"train.seed": [0, 0]}}, "duplicate cell seed=0"),
    ({"grid": {"train.seed": [0]}, "cells": [{"train.seed": 0, "train.steps": 25}]}, "cells[0]: duplicate cell"),
    ({"grid": {"model.path": ["a/toy", "b/toy"]}}, "two cells are named size=toy"),
    ({"grid": {"train.run_dir": ["x"]}}, "grid.train.run_dir: set by the study"),
    ({"grid": {"train.seed": [0]}, "held_out": {"train.seed": 5}}, "held_out: no cell matches"),
    ({"grid": {"train.seed": [0]}, "held_out": {"train.nope": 5}}, "held_out.train.nope: unknown config key"),
    ({"grid": {"train.seed": [0]}, "analysis": {"metric": ["x"]}}, "analysis.metric: unknown key"),
    ({"grid": {"train.seed": [0]}, "analysis": {"bootstrap": -1}}, "analysis.bootstrap: expected a whole number"),
    ({"grid": {"train.seed": [0]}, "analysis": {"bootstrap": "many"}}, "analysis.bootstrap: expected a whole"),
    ({"grid": {"train.seed": [0]}, "base": "nope.yaml"}, "base: config file not found: nope.yaml"),
    ({"grid": {"train.seed": [0]}, "name": "a b"}, "name: required"),
    ({}, "no cells"),
])
def test_bad_specs_name_the_key(extra, needle):
    with pytest.raises(SpecError) as e:
        parse(**extra)
    msg = str(e.value)
    assert needle in msg and msg.startswith("spec.yaml") and "\n" not in msg


def test_bad_files(tmp_path):
    with pytest.raises(SpecError, match="study spec not found"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="bad.yaml: line 2 is not valid YAML"):
        load_spec(bad)
    bad.write_text("- a\n")
    with pytest.raises(SpecError, match="top level must be a mapping"):
        load_spec(bad)


def test_base_path_is_relative_to_the_spec(tmp_path):
    (tmp_path / "mybase.yaml").write_text(yaml.safe_dump({"train": {"steps": 7}}))
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "base": "mybase.yaml", "grid": {"train.seed": [0]}}))
    s = load_spec(spec)
    assert s.resolve(s.cells[0]).train.steps == 7


def test_shipped_specs_parse():
    ref = load_spec(BUILTIN_CONFIGS / "studies" / "toy-scaling.yaml")
    sizes = {ref.resolve(c).model.path for c in ref.cells}
    assert sizes == {"toy-0.1m", "toy-0.2m", "toy-0.8m", "toy-3m"}  # toy-10m: see the spec's header, docs/scaling.md
    assert len(ref.cells) == 4 * 3 + 2 * 3
    assert ref.held_out == [f"size=toy-3m,seed={s}" for s in range(3)]
    no_tools = [c for c in ref.cells if ref.resolve(c).rollout.max_tool_calls == 0]
    assert len(no_tools) == 6 and all(ref.resolve(c).eval.max_tool_calls == 0 for c in no_tools)
    assert all(ref.resolve(c).data.eval_extra == ["toy:ood-wording", "toy:ood-size"] for c in ref.cells)
    assert "eval/ood-wording/accuracy" in ref.metrics and "eval/ood-size/accuracy" in ref.metrics
    cur = load_spec(BUILTIN_CONFIGS / "studies" / "curriculum.yaml")
    assert len(cur.cells) == 9 and "eval/ood-size/accuracy" in cur.metrics
    assert all(cur.resolve(c).data.eval_extra == ["toy:ood-wording", "toy:ood-size"] for c in cur.cells)
    for curriculum in ("varied", "diverse"):
        assert {cur.resolve(c).data.train for c in cur.cells
                if cur.resolve(c).model.path == f"toy-0.8m-{curriculum}"} == {f"toy:train-{curriculum}"}
    tiny = load_spec(BUILTIN_CONFIGS / "studies" / "tiny.yaml")
    assert [c.name for c in tiny.cells] == ["size=toy-0.2m,seed=0", "size=toy-0.2m,seed=1", "size=toy,seed=0",
                                            "size=toy,seed=1"]
    assert all(tiny.resolve(c).train.steps == 2 for c in tiny.cells)
    assert ref.bootstrap == 200 and tiny.bootstrap == 20          # the default; the CI study's coarse, fast fits


def test_cli_fails_before_running_and_dry_run_lists_cells(tmp_path):
    from typer.testing import CliRunner

    from zerotir.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "b", "grid": {"train.seed": [0], "algo.nmae": ["grpo"]}}))
    r = CliRunner().invoke(app, ["study", str(bad), "--out", str(tmp_path / "study")])
    assert r.exit_code == 2 and "unknown config key 'algo.nmae'" in r.output
    assert not (tmp_path / "study").exists()  # nothing was created, let alone run
    r = CliRunner().invoke(app, ["study", str(BUILTIN_CONFIGS / "studies" / "tiny.yaml"), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "size=toy,seed=1: model.path=toy train.seed=1  (held out)" in r.output and "4 cells" in r.output
