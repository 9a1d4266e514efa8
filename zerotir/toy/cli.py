"""`zerotir toy build-base | check-base` and `zerotir demo`. Heavy imports live inside the command bodies."""

from __future__ import annotations

from typing import Optional

import typer

from zerotir.cli_common import fail

app = typer.Typer(no_args_is_help=True)


@app.command("build-base")
def build_base(
    size: str = typer.Option("toy", "--size", help="Named size: toy (= toy-0.8m), toy-0.1m, toy-0.2m, toy-3m, "
                                                   "toy-10m; or a variant: toy-0.8m-varied, -balanced, -boosted, "
                                                   "-diverse."),
    out: str = typer.Option("", "--out", help="Output directory (default: the shipped copy in zerotir/assets for "
                                              "shipped sizes, the user cache for the others)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Pretraining steps (default: the size's)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for corpus, initialisation and batch order."),
    code_share: Optional[float] = typer.Option(None, "--code-share", help="Share of Q/A solutions in the corpus "
                                               "that use code (the tool-use prior; default 0.03)."),
    docs: Optional[int] = typer.Option(None, "--docs", help="Corpus documents (default 80,000)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default 2)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the target already holds this build."),
    check: bool = typer.Option(True, "--check/--no-check", help="Sample the built base on held-out problems."),
) -> None:
    """Pretrain a toy base model from scratch (seeded; the 0.8M default takes ~10-20 minutes on 2 cores)."""
    from dataclasses import replace
    from pathlib import Path

    from zerotir.toy.base import base_spec, canonical_size
    from zerotir.toy.cache import SHIPPED, ASSETS, build_locked, cached_dir, is_built

    try:
        name = canonical_size(size)
    except ValueError as e:
        fail(str(e))
        return
    spec = base_spec(name)
    if code_share is not None and not 0.0 <= code_share <= 1.0:
        fail(f"--code-share must be in [0, 1], got {code_share}")
    corpus = spec.corpus
    if seed is not None:
        corpus = replace(corpus, seed=seed)
    if code_share is not None:
        corpus = replace(corpus, code_solution_share=code_share)
    if docs is not None:
        corpus = replace(corpus, n_docs=docs)
    spec = replace(spec, corpus=corpus, **{k: v for k, v in (("steps", steps), ("seed", seed), ("threads", threads))
                                            if v is not None})
    if out:
        target = Path(out)
    elif name in SHIPPED:
        target = ASSETS / SHIPPED[name]
    else:
        target = cached_dir(name, spec)
    if is_built(target) and not force:
        typer.echo(f"{name} is already built at {target} (--force rebuilds it)")
    else:
        build_locked(name, spec, target, log=typer.echo, force=force)
    if check:
        _check(str(target), 256, 1.0, spec.seed)


def _check(model: str, n: int, temperature: float, seed: int) -> dict:
    import json
    from pathlib import Path

    from zerotir.models import resolve_model_path
    from zerotir.toy.check import BASE_TARGET, check_base, in_target

    stats = check_base(model, n=n, temperature=temperature, seed=seed)
    typer.echo("base check on held-out (temperature %.1f): %s" % (temperature, json.dumps(
        {k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items() if k != "by_kind"})))
    typer.echo("  code attempts right, per kind: " + ", ".join(
        f"{kind} {k['code_correct']}/{k['code_responses']} (of {k['n']})" for kind, k in stats["by_kind"].items()))
    typer.echo("  " + ("OK: " if in_target(stats) else "WARNING: outside ") + "the target (" + ", ".join(
        f"{k} {lo:g}-{hi:g}" for k, (lo, hi) in BASE_TARGET.items()) + ") for RL to have a signal")
    p = Path(resolve_model_path(model)) / "build.json"
    if p.exists():
        d = json.loads(p.read_text())
        d["check"] = {"temperature": temperature, **stats}
        p.write_text(json.dumps(d, indent=1))
    return stats


@app.command("check-base")
def check_base(
    model: str = typer.Option("toy", "--model", help="Model directory, or a toy size name ('toy', 'toy-0.2m', ...)."),
    n: int = typer.Option(256, "--n", help="Held-out problems to sample (one response each)."),
    temperature: float = typer.Option(1.0, "--temperature"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Sample the base on held-out problems through the eval path (real sandbox and reward): code rate and
    correctness of its code (is there an RL signal?)."""
    from zerotir.models import ModelError, check_model_dir

    try:
        check_model_dir(model)
    except ModelError as e:
        fail(str(e))
        return
    _check(model, n, temperature, seed)


def demo_command(
    no_tools: bool = typer.Option(False, "--no-tools", help="ZeroRL baseline: tool budget 0, same RL budget."),
    algo: Optional[str] = typer.Option(None, "--algo", help="Advantage estimator (default: the toy preset's)."),
    seed: int = typer.Option(0, "--seed"),
    steps: Optional[int] = typer.Option(None, "--steps", help="RL steps (default: the toy preset's)."),
    grid: bool = typer.Option(False, "--grid", help="Train/eval tool-budget grid (0, 1, 2, 4): four RL runs."),
    run_dir: Optional[str] = typer.Option(None, "--run-dir", help="Where to write the run (default runs/demo-…)."),
    set_: list[str] = typer.Option([], "--set", help="Dotted config override key=value (repeatable)."),
) -> None:
    """The toy world: RL teaches a tiny model to write code (what `make demo` runs)."""
    import time

    from zerotir.config import ConfigError
    from zerotir.data import DataError
    from zerotir.models import ModelError
    from zerotir.toy.demo import demo_config, run_demo, run_grid, start_end, table_markdown
    from zerotir.telemetry import read_metrics, setup_logging

    try:
        cfg = demo_config(seed=seed, steps=steps, algo=algo, no_tools=no_tools, overrides=set_)
    except ConfigError as e:
        fail(str(e))
        return
    setup_logging(cfg.logging.level)
    t0 = time.time()
    try:
        if grid:
            out = run_grid(cfg, run_dir or f"runs/toy-grid-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}")
            typer.echo((out / "grid.md").read_text())
            typer.echo(f"grid written to {out} ({time.time() - t0:.0f}s)")
            return
        run = run_demo(cfg, run_dir)
    except (DataError, ModelError, ValueError, FileExistsError) as e:
        fail(str(e))
        return
    typer.echo("")
    rows = read_metrics(run / "metrics.jsonl")
    typer.echo(table_markdown(start_end(rows)))
    if (run / "generalization.json").is_file():  # the final policy beyond the training distribution
        import json

        from zerotir.toy.demo import eval_rows, generalization_markdown

        gen = json.loads((run / "generalization.json").read_text())
        typer.echo("\n" + generalization_markdown(eval_rows(rows)[-1], gen))
    typer.echo(f"\nrun dir {run} ({time.time() - t0:.0f}s): report.md, plots/curves.png, transcripts/")
