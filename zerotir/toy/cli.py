"""`zerotir toy build-base | check-base` and `zerotir demo`. Heavy imports live inside the command bodies."""

from __future__ import annotations

from typing import Optional

import typer

from zerotir.cli_common import fail

app = typer.Typer(no_args_is_help=True)


@app.command("build-base")
def build_base(
    out: str = typer.Option("", "--out", help="Output directory (default: the shipped zerotir/assets/toy-base)."),
    steps: int = typer.Option(900, "--steps", help="Pretraining steps (32 windows of 256 characters each)."),
    seed: int = typer.Option(0, "--seed", help="Seed for corpus, initialisation and batch order."),
    code_share: float = typer.Option(0.03, "--code-share",
                                     help="Share of Q/A solutions in the corpus that use code (the tool-use prior)."),
    docs: int = typer.Option(80_000, "--docs", help="Corpus documents."),
    threads: int = typer.Option(2, "--threads", help="torch CPU threads."),
    check: bool = typer.Option(True, "--check/--no-check", help="Probe the built base on held-out problems."),
) -> None:
    """Pretrain the tiny toy base model from scratch (seeded; ~10-20 minutes on 2 cores)."""
    from zerotir.models import TOY_BASE_DIR
    from zerotir.toy.base import BaseSpec, build_base as _build
    from zerotir.toy.corpus import CorpusSpec

    if not 0.0 <= code_share <= 1.0:
        fail(f"--code-share must be in [0, 1], got {code_share}")
    spec = BaseSpec(steps=steps, seed=seed, threads=threads,
                    corpus=CorpusSpec(n_docs=docs, code_solution_share=code_share, seed=seed))
    target = out or str(TOY_BASE_DIR)
    _build(spec, target, log=typer.echo)
    if check:
        _check(target, 256, 1.0, seed)


def _check(model_dir: str, n: int, temperature: float, seed: int) -> dict:
    import json
    from pathlib import Path

    from zerotir.toy.probe import probe_base
    from zerotir.toy.tasks import toy_problems

    stats, samples = probe_base(model_dir, toy_problems("heldout")[:n], temperature=temperature, seed=seed)
    typer.echo("base check on held-out (temperature %.1f): %s" % (temperature, json.dumps(
        {k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()})))
    ok = 0.02 <= stats["code_ratio"] <= 0.08 and stats["code_attempt_accuracy"] >= 0.3
    typer.echo("  " + ("OK: " if ok else "WARNING: outside ") +
               "the target (code rate 2-8%, >= 30% of code attempts correct) for RL to have a signal")
    p = Path(model_dir) / "build.json"
    if p.exists():
        d = json.loads(p.read_text())
        d["check"] = {"temperature": temperature, **stats}
        p.write_text(json.dumps(d, indent=1))
    return stats


@app.command("check-base")
def check_base(
    model: str = typer.Option("toy", "--model", help="Model directory, or 'toy' for the shipped base."),
    n: int = typer.Option(256, "--n", help="Held-out problems to sample (one response each)."),
    temperature: float = typer.Option(1.0, "--temperature"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Sample the base on held-out problems: code rate and correctness of its code (is there an RL signal?)."""
    from zerotir.models import ModelError, check_model_dir

    try:
        path = str(check_model_dir(model))
    except ModelError as e:
        fail(str(e))
        return
    _check(path, n, temperature, seed)


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
    typer.echo(table_markdown(start_end(read_metrics(run / "metrics.jsonl"))))
    typer.echo(f"\nrun dir {run} ({time.time() - t0:.0f}s): report.md, plots/curves.png, transcripts/")
