"""The "Import rules" table of docs/architecture.md, enforced: every import in zerotir/ (lazy ones inside functions
included) must be allowed by the table's rows, and the table must cover every package. The table is read from the
doc, so the doc and the code cannot drift apart."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "zerotir"
DOC = ROOT / "docs" / "architecture.md"


@dataclass
class Rule:
    allow: set[str] = field(default_factory=set)
    never: set[str] = field(default_factory=set)


def _names(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


def read_rules(text: str) -> dict[str, Rule]:
    """Rows of the table under '## Import rules': | module | may import | never | why |."""
    m = re.search(r"^## Import rules\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, f"{DOC}: no '## Import rules' section"
    rows = [ln for ln in m.group(1).splitlines() if ln.startswith("|")]
    assert len(rows) > 2, f"{DOC}: the Import rules section has no table"
    rules: dict[str, Rule] = {}
    for ln in rows[2:]:  # after the header and the |---| line
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        assert len(cells) >= 3, f"{DOC}: Import rules row needs module | may import | never: {ln!r}"
        key = _names(cells[0])
        assert len(key) == 1, f"{DOC}: Import rules row must name one module in backticks: {ln!r}"
        rules[key.pop()] = Rule(_names(cells[1]), _names(cells[2]))
    return rules


def module_name(path: Path) -> str:
    """zerotir/rollout/tir.py → 'rollout.tir'; zerotir/types.py → 'types'; zerotir/__init__.py → '__init__'."""
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _is_module(rel: str) -> bool:
    """'train.loop' → zerotir/train/loop.py (or a package dir) exists."""
    p = PKG.joinpath(*rel.split("."))
    return p.is_dir() or p.with_suffix(".py").is_file()


def zerotir_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module relative to zerotir, e.g. 'rollout.format') for every import of the project in the
    file, at any depth (imports inside functions count). `from zerotir.train import loop` names 'train.loop' (a
    module); `from zerotir import __version__` names nothing (an attribute of the root package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package[:len(package) - (node.level - 1)]
                mod = ".".join(["zerotir", *base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            found += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
    out = []
    for line, name in found:
        parts = name.split(".")
        if parts[0] != "zerotir":
            continue
        # the longest prefix that is a module of the package ('x.y.SomeClass' → 'x.y')
        rel = next((".".join(parts[1:k]) for k in range(len(parts), 1, -1) if _is_module(".".join(parts[1:k]))), None)
        if rel is not None:
            out.append((line, rel))
    return list(dict.fromkeys(out))  # `from x import a, b` names x once


def third_party(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def matching_rows(module: str, rules: dict[str, Rule]) -> list[str]:
    """Rows that apply to `module`: its package (first part), the module itself and its parents, `*.cli` for a
    sub-command module."""
    parts = module.split(".")
    keys = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    if parts[-1] == "cli" and len(parts) > 1:
        keys.add("*.cli")
    return [k for k in rules if k in keys]


def covered(target: str, entries: set[str]) -> bool:
    """`target` (e.g. 'train.loop') is allowed by entries: '*', its package 'train', or 'train.loop' / a parent."""
    parts = target.split(".")
    return "*" in entries or any(".".join(parts[:i]) in entries for i in range(1, len(parts) + 1))


def verdict(module: str, target: str, rules: dict[str, Rule]) -> str | None:
    """None when `module` may import `target` (both relative to zerotir), else why not."""
    rows = matching_rows(module, rules)
    own = module.split(".")[0]
    if not rows:
        return f"no row for '{own}' in the Import rules table"
    allow = set().union(*(rules[r].allow for r in rows))
    never = set().union(*(rules[r].never for r in rows))
    if covered(target, never):
        return f"imports zerotir.{target}, which '{own}' must never import"
    if target.split(".")[0] != own and not covered(target, allow):
        return f"imports zerotir.{target}; '{own}' may import only {sorted(allow) or 'nothing'}"
    return None


def violations(rules: dict[str, Rule]) -> list[str]:
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        mod, where = module_name(path), path.relative_to(ROOT)
        if not matching_rows(mod, rules):
            bad.append(f"{where}: no row for '{mod.split('.')[0]}' in the Import rules table")
            continue
        never = set().union(*(rules[r].never for r in matching_rows(mod, rules)))
        bad += [f"{where}:{line}: {why}" for line, target in zerotir_imports(path)
                if (why := verdict(mod, target, rules)) is not None]
        bad += [f"{where}:{line}: imports {name}, which '{mod.split('.')[0]}' must never import"
                for line, name in third_party(path) if name in never]
    return bad


def test_every_import_follows_the_table():
    bad = violations(read_rules(DOC.read_text(encoding="utf-8")))
    assert not bad, "imports that break docs/architecture.md's Import rules:\n  " + "\n  ".join(bad)


def test_the_table_names_only_what_exists():
    """A row or entry for a module that is gone is a stale rule (third-party names in 'never' are not checked)."""
    rules = read_rules(DOC.read_text(encoding="utf-8"))
    modules = {module_name(p) for p in PKG.rglob("*.py")}
    packages = {m.split(".")[0] for m in modules}
    names = set(rules) | {n for r in rules.values() for n in r.allow} | \
        {n for r in rules.values() for n in r.never if n.split(".")[0] in packages}
    stale = sorted(n for n in names if n not in ("*", "*.cli") and n not in packages and n not in modules)
    assert not stale, f"{DOC}: the Import rules table names modules that do not exist: {stale}"


# ------------------------------------------------------------------ the checker itself, on hand-made cases

RULES = read_rules("""## Import rules

| module | may import (zerotir) | never | why |
|---|---|---|---|
| `types` | — | | |
| `rollout` | `types`, `distributed.vllm_engine` | | |
| `reward` | `types`, `rollout.format` | `torch` | |
| `distributed` | `types`, `train` | `train.loop` | |
| `*.cli` | `data` | | |
| `cli` | `*` | | |

## Next
""")


@pytest.mark.parametrize("module,target,ok", [
    ("rollout.tir", "types", True),
    ("rollout.tir", "rollout.format", True),                   # its own package
    ("rollout.engines", "distributed.vllm_engine", True),       # one module of a package
    ("rollout.engines", "distributed.driver", False),           # ...not the rest of it
    ("reward.extract", "rollout.format", True),
    ("reward.extract", "rollout.tir", False),
    ("distributed.actors", "train.phases", True),
    ("distributed.driver", "train.loop", False),                # 'never' wins over the package entry
    ("rollout.cli", "data", True),                              # the *.cli row
    ("rollout.tir", "data", False),
    ("cli", "train.loop", True),
    ("types", "config", False),
])
def test_checker_cases(module, target, ok):
    assert (verdict(module, target, RULES) is None) == ok


def test_a_module_without_a_row_is_reported():
    assert "no row for 'study'" in verdict("study.runner", "types", RULES)


def test_imports_are_found_at_any_depth_and_relative(monkeypatch):
    """Lazy imports inside functions and relative imports count; `from zerotir.train import loop` is train.loop;
    `from zerotir import __version__` names no module."""
    src = PKG / "rollout" / "tir.py"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: (
        "from zerotir import __version__\nfrom . import format\nfrom .engine import Engine\n"
        "def f():\n    from zerotir.train import loop\n    import zerotir.data\n"))
    assert zerotir_imports(src) == [(2, "rollout.format"), (3, "rollout.engine"), (5, "train.loop"), (6, "data")]
