"""Problem sources: the registry behind '<source>:<split>' specs, lazy discovery of the toy source, clear errors."""

import subprocess
import sys
from pathlib import Path

import pytest

from zerotir.data import DataError, load_problems, register_source, source_names
from zerotir.types import Problem

ROOT = Path(__file__).resolve().parents[2]


def _two(split, seed):
    if split != "a":
        raise ValueError(f"no split '{split}' (only 'a')")
    return [Problem(id=f"m-{seed}-{i}", prompt=f"{i}+{seed}?", answer=str(i + seed)) for i in range(2)]


def test_registered_source_gets_split_and_seed():
    register_source("mine", _two)
    ps = load_problems("mine:a", seed=5, limit=1)
    assert [(p.id, p.answer) for p in ps.problems] == [("m-5-0", "5")] and ps.source == "mine:a"
    assert "mine" in source_names() and "toy" in source_names()
    with pytest.raises(DataError, match=r"mine:b: no split 'b' \(only 'a'\)"):
        load_problems("mine:b")


def test_unknown_source_and_bad_names():
    with pytest.raises(DataError, match="nosuch:x: file not found.*toy"):
        load_problems("nosuch:x")
    for bad in ("", "a:b", "hf", "a/b"):
        with pytest.raises(ValueError, match="bad problem source name"):
            register_source(bad, _two)


def test_empty_source_is_an_error():
    register_source("empty", lambda split, seed: [])
    with pytest.raises(DataError, match="empty:x: the source returned no problems"):
        load_problems("empty:x")


def test_a_file_wins_over_a_source_of_the_same_spelling(tmp_path, monkeypatch):
    register_source("mine", _two)
    monkeypatch.chdir(tmp_path)
    Path("mine:a").write_text('{"id": "f1", "problem": "1+1?", "answer": "2"}\n')
    assert [p.id for p in load_problems("mine:a").problems] == ["f1"]


def test_toy_is_discovered_without_importing_toy_first():
    code = ("import sys; from zerotir.data import load_problems; assert 'zerotir.toy.tasks' not in sys.modules; "
            "ps = load_problems('toy:heldout'); print(len(ps.problems), ps.problems[0].id, "
            "'zerotir.toy.tasks' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["256", "toy-heldout-0", "True"]


def test_toy_splits_and_errors():
    a = load_problems("toy:train", seed=1, limit=3).problems
    assert a == load_problems("toy:train", seed=1, limit=3).problems
    assert a != load_problems("toy:train", seed=2, limit=3).problems
    with pytest.raises(DataError, match="toy:nope: unknown toy split 'nope'"):
        load_problems("toy:nope")
