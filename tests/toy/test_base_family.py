"""The toy base family: named sizes, shipped copies equal to their presets, the user cache (location, spec hash,
build on first use, one build under concurrent callers), and name resolution through zerotir.models."""

import ast
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from zerotir.models import TOY_BASE_DIR, ModelError, resolve_model_path
from zerotir.toy import cache
from zerotir.toy.base import BASE_SIZES, BaseSpec, base_spec, canonical_size, make_model
from zerotir.toy.corpus import CorpusSpec

ROOT = Path(__file__).resolve().parents[2]


def _tiny_spec(seed=0):
    return BaseSpec(hidden=32, layers=1, heads=2, intermediate=64, seq_len=64, batch=4, steps=2, warmup=1,
                    seed=seed, threads=1, corpus=CorpusSpec(n_docs=200, seed=seed))


def _params(spec: BaseSpec) -> int:
    return sum(p.numel() for p in make_model(spec, 99, 0, 1).parameters())


def test_sizes_span_30x_and_grow_monotonically():
    counts = {name: _params(spec) for name, spec in BASE_SIZES.items()}
    assert counts["toy-0.8m"] == 816_640                      # today's base, unchanged
    assert list(counts.values()) == sorted(counts.values())   # the registry is ordered by size
    assert max(counts.values()) / min(counts.values()) >= 30
    assert len(counts) >= 4


def test_names_and_aliases():
    assert canonical_size("toy") == "toy-0.8m" and canonical_size("toy-3m") == "toy-3m"
    with pytest.raises(ValueError, match="unknown toy base size 'toy-7m'.*toy-0.2m"):
        canonical_size("toy-7m")
    assert canonical_size("toy-0.8m-varied") == "toy-0.8m-varied"  # a variant, outside the size family
    assert base_spec("toy-0.8m-varied").corpus.wordings == "varied"
    s = base_spec("toy-3m")
    s.steps = 1                                               # a copy: the registry is not changed
    assert BASE_SIZES["toy-3m"].steps != 1


@pytest.mark.parametrize("name", sorted(cache.SHIPPED))
def test_shipped_copies_are_their_presets(name):
    d = cache.ASSETS / cache.SHIPPED[name]
    assert cache.is_built(d), f"{d} is not a complete build"
    built = json.loads((d / "build.json").read_text())
    assert built["spec"] == json.loads(json.dumps(cache.spec_record(base_spec(name))))  # same settings: reproducible
    assert built["params"] == _params(base_spec(name))
    assert (d / "model.safetensors").stat().st_size < 4_000_000               # keep the package small


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("ZEROTIR_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "zerotir"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "zerotir"
    monkeypatch.setenv("ZEROTIR_CACHE", str(tmp_path / "zc"))
    assert cache.cache_dir() == tmp_path / "zc"


def test_spec_hash_follows_every_field():
    a = _tiny_spec()
    assert cache.spec_hash(a) == cache.spec_hash(_tiny_spec())
    assert cache.spec_hash(a) != cache.spec_hash(replace(a, steps=3))
    assert cache.spec_hash(a) != cache.spec_hash(replace(a, corpus=replace(a.corpus, code_solution_share=0.05)))


def test_resolution_of_names_and_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("ZEROTIR_CACHE", str(tmp_path / "cache"))
    assert cache.is_built(cache.ASSETS / "toy-base-0.2m")     # fail here rather than start a build below
    assert resolve_model_path("toy") == TOY_BASE_DIR == resolve_model_path("toy-0.8m")
    assert resolve_model_path("toy-0.2m") == cache.ASSETS / "toy-base-0.2m"
    assert resolve_model_path("runs/x/policy") == Path("runs/x/policy")
    with pytest.raises(ModelError, match="unknown toy base size 'toy-big'"):
        resolve_model_path("toy-big")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy-big").mkdir()                            # an existing directory wins over a toy name
    assert resolve_model_path("toy-big") == Path("toy-big")


def test_missing_size_builds_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZEROTIR_CACHE", str(tmp_path))
    monkeypatch.setitem(BASE_SIZES, "toy-tiny", _tiny_spec())
    with pytest.raises(ModelError, match="not built.*build-base --size toy-tiny"):
        cache.toy_base_path("toy-tiny", build=False)
    said: list[str] = []
    p = resolve_model_path("toy-tiny")                        # builds (no TTY: plain lines)
    assert p == tmp_path / "toy-base" / f"toy-tiny-{cache.spec_hash(_tiny_spec())}" and cache.is_built(p)
    assert cache.toy_base_path("toy-tiny", log=said.append) == p and said == []   # second use: nothing built
    assert [x.name for x in p.parent.iterdir() if x.name.endswith(".partial")] == []  # renamed when complete


def test_a_killed_build_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from zerotir.toy import base

    monkeypatch.setattr(base, "RESUME_EVERY", 2)
    spec = replace(_tiny_spec(), steps=6)
    whole = base.build_base(spec, tmp_path / "whole", log=lambda m: None)
    said: list[str] = []
    assert base.build_base(spec, tmp_path / "cut", log=said.append, until=3) is None    # "killed" after step 3
    assert (tmp_path / "cut" / base.RESUME_FILE).is_file() and not (tmp_path / "cut" / "build.json").exists()
    resumed = base.build_base(spec, tmp_path / "cut", log=said.append)
    assert any("resuming the build at step 3/6" in m for m in said) and resumed["resumed_at"] == 3
    assert not (tmp_path / "cut" / base.RESUME_FILE).exists() and whole["resumed_at"] is None
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["final_loss"] == whole["final_loss"]
    # a resume point written for another spec is not used
    base.build_base(spec, tmp_path / "other", log=lambda m: None, until=2)
    said.clear()
    base.build_base(replace(spec, lr=spec.lr / 2), tmp_path / "other", log=said.append)
    assert any("written for another spec: starting over" in m for m in said)


BUILDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from zerotir.toy.base import BaseSpec
    from zerotir.toy.cache import build_locked
    from zerotir.toy.corpus import CorpusSpec
    spec = BaseSpec(hidden=32, layers=1, heads=2, intermediate=64, seq_len=64, batch=4, steps=30, warmup=1,
                    threads=1, corpus=CorpusSpec(n_docs=200))
    build_locked("toy-tiny", spec, Path(sys.argv[1]), log=lambda m: print(m, flush=True), progress=False)
""")


def test_two_processes_build_a_size_once(tmp_path):
    final = tmp_path / "toy-tiny-x"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER, str(final)], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum("building toy base" in o for o in outs) == 1, outs     # the other waited, then found it built
    assert cache.is_built(final) and not list(tmp_path.glob("*.partial"))


def test_models_and_data_do_not_import_toy():
    """The import table: toy → models, data; never the reverse (the hooks are data, loaded on first use)."""
    for rel in ("zerotir/models/__init__.py", "zerotir/data/__init__.py"):
        tree = ast.parse((ROOT / rel).read_text())
        mods = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        mods += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in mods if m.startswith("zerotir.toy")], rel
