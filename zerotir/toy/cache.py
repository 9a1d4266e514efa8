"""Where the toy base models live, and building a missing size on first use.

    toy_base_path("toy")        # zerotir/assets/toy-base (shipped)
    toy_base_path("toy-0.2m")   # zerotir/assets/toy-base-0.2m (shipped)
    toy_base_path("toy-3m")     # ~/.cache/zerotir/toy-base/toy-3m-<spec hash>, built the first time (~40 min)

`zerotir.models.resolve_model_path` calls `toy_base_path` for 'toy' and 'toy-<size>' names, so `model.path: toy-3m`
works in any config. The cache is $ZEROTIR_CACHE, else $XDG_CACHE_HOME/zerotir, else ~/.cache/zerotir. A cached
directory's name carries a hash of its BaseSpec, so changing a preset never reuses weights built from the old one.

Concurrency: a study runs cells in parallel, and several may ask for the same missing size at once. The builder
holds an exclusive lock (`<dir>.lock`, flock: released by the kernel if the process dies) while it builds into
`<dir>.partial` and renames that to `<dir>` when complete, so a reader sees either nothing or a finished model;
the others wait on the lock, then find the directory and build nothing. A killed build leaves `<dir>.partial` with
its resume point (toy.base.RESUME_EVERY steps apart): the next build of that size continues from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED: dict[str, str] = {"toy-0.8m": "toy-base", "toy-0.2m": "toy-base-0.2m",
                            "toy-0.8m-diverse": "toy-base-0.8m-diverse"}
"""Sizes shipped in the package: name → directory under zerotir/assets (the test suite uses them without building)."""


def cache_dir() -> Path:
    """$ZEROTIR_CACHE, else $XDG_CACHE_HOME/zerotir, else ~/.cache/zerotir."""
    if os.environ.get("ZEROTIR_CACHE"):
        return Path(os.environ["ZEROTIR_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "zerotir"
    return Path.home() / ".cache" / "zerotir"


HASH_OMITTED_AT_DEFAULT: dict[tuple[str, str], object] = {("corpus", "wordings"): "fixed",
                                                           ("corpus", "snippet_mix"): None}
"""Spec fields added after bases were cached: left out of the hash while at their default, so adding an option
does not orphan every cached base (a spec that sets it gets a new hash)."""


def spec_record(spec) -> dict:
    """The spec's fields as a plain dict, minus HASH_OMITTED_AT_DEFAULT fields at their default: what the hash,
    a build's resume key and build.json's 'spec' record."""
    d = asdict(spec)
    for (section, key), default in HASH_OMITTED_AT_DEFAULT.items():
        if isinstance(d.get(section), dict) and d[section].get(key, default) == default:
            d[section].pop(key, None)
    return d


def spec_hash(spec) -> str:
    """10 hex digits of sha256 over the spec's fields (sorted JSON): equal specs, equal hash."""
    text = json.dumps(spec_record(spec), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def is_built(path: Path) -> bool:
    """A complete build: config, weights, tokenizer, and build.json (written last by build_base)."""
    return all((path / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json", "build.json"))


def shipped_dir(name: str) -> Path | None:
    """The package's copy of a size, when this size is shipped and present."""
    d = SHIPPED.get(name)
    return ASSETS / d if d and is_built(ASSETS / d) else None


def cached_dir(name: str, spec=None) -> Path:
    """Where a size lives in the user cache (whether or not it is built yet)."""
    from zerotir.toy.base import base_spec

    spec = spec if spec is not None else base_spec(name)
    return cache_dir() / "toy-base" / f"{name}-{spec_hash(spec)}"


def _say(msg: str) -> None:
    """Log through the 'zerotir' logger when one is set up, else a plain line on stderr (a build can take an
    hour: it must never be silent)."""
    logger = logging.getLogger("zerotir.toy")
    if logging.getLogger("zerotir").handlers:
        logger.info(msg)
    else:
        print(msg, file=sys.stderr, flush=True)


def toy_base_path(name: str, *, build: bool = True, log: Callable[[str], None] | None = None,
                  progress: bool | None = None) -> Path:
    """The directory of toy base `name` ('toy', 'toy-0.8m', 'toy-3m', ...), building it into the cache if missing.

    build=False raises instead of building. progress: a progress bar (default: when stderr is a terminal; plain
    log lines otherwise). Raises models.ModelError for an unknown name or a missing size with build=False."""
    from zerotir.models import ModelError
    from zerotir.toy.base import base_spec, canonical_size

    try:
        size = canonical_size(name)
    except ValueError as e:
        raise ModelError(str(e)) from None
    ship = shipped_dir(size)
    if ship is not None:
        return ship
    final = cached_dir(size)
    if is_built(final):
        return final
    if not build:
        raise ModelError(f"toy base '{size}' is not built (expected at {final}); "
                         f"build it with `zerotir toy build-base --size {size}`")
    return build_locked(size, base_spec(size), final, log=log or _say, progress=progress)


def build_locked(name: str, spec, final: Path, *, log: Callable[[str], None] = _say,
                 progress: bool | None = None, force: bool = False) -> Path:
    """Build `spec` into `final` under the lock (temp dir, then rename). Returns `final`; builds nothing when another
    process finished it while we waited (unless force, which replaces it)."""
    import fcntl

    from zerotir.toy.base import build_base

    final.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{final}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting: another process is building {name} (lock {final}.lock)")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built(final) and not force:
            return final
        for stale in final.parent.glob(f"{final.name}.tmp-*"):  # older builders' temp dirs; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        part = final.parent / f"{final.name}.partial"   # kept when killed: the next build resumes from it
        if force:
            shutil.rmtree(part, ignore_errors=True)
        log(f"building toy base {name} into {final} (first use; seeded, reproducible, resumable)")
        build_base(spec, part, log=log, name=name, progress=sys.stderr.isatty() if progress is None else progress)
        if final.exists():  # force: the old copy goes only once the new one is complete
            shutil.rmtree(final)
        os.rename(part, final)
    return final
