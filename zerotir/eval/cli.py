"""`zerotir eval`: benchmarks × tool budgets with the training rollout, sandbox and reward; resumable."""

from __future__ import annotations

from typing import Optional

import typer

from zerotir.cli_common import fail, preset_for


def eval_command(
    model: Optional[str] = typer.Option(None, "--model", help="HF model directory, or 'toy' (default: model.path)."),
    benchmarks: Optional[str] = typer.Option(
        None, "--benchmarks", "-b",
        help="Comma-separated names (see --list), 'paper' for the paper's eight, 'toy:heldout', or .jsonl paths."),
    samples: Optional[int] = typer.Option(None, "--samples", "-k",
                                          help="Samples per problem (k of avg@k, pass@k, maj@k)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature; 0 = greedy (k=1)."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Nucleus sampling mass."),
    max_tool_calls: Optional[str] = typer.Option(
        None, "--max-tool-calls", help="Executed tool calls per response; a list (0,1,2,4,8) sweeps the budget."),
    limit: Optional[int] = typer.Option(None, "--limit", help="First N problems of each benchmark (0 = all)."),
    out: Optional[str] = typer.Option(None, "--out", help="Output directory (samples, CSV, Markdown); resumable."),
    data_dir: Optional[str] = typer.Option(
        None, "--data-dir", help="Benchmark JSONL dir (default: $ZEROTIR_DATA/benchmarks or ../shared/data/benchmarks)."),
    source: str = typer.Option("auto", "--source",
                               help="auto/local (JSONL in the data dir) or hub (Hugging Face datasets)."),
    config: Optional[str] = typer.Option(None, "--config",
                                         help="YAML config or preset (toy, paper) for rollout/sandbox/reward settings."),
    set_: list[str] = typer.Option([], "--set",
                                   help="Dotted override key=value (repeatable), e.g. rollout.max_total_tokens=2048."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Discard an existing eval in --out instead of resuming it."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    list_: bool = typer.Option(False, "--list", help="List the known benchmarks and exit."),
) -> None:
    """Evaluate a model on math benchmarks with tools: avg@k, pass@k, maj@k, code ratio, tool errors, tokens."""
    from zerotir.eval.benchmarks import BENCHMARKS, PAPER_BENCHMARKS, BenchmarkError, parse_benchmark_list

    if list_:
        for name, spec in BENCHMARKS.items():
            star = "*" if name in PAPER_BENCHMARKS else " "
            typer.echo(f"{star} {name:15s} {spec.file:22s} hub: {spec.hf_id}")
        typer.echo("(* = the paper's eight, selected by --benchmarks paper)")
        return

    from pathlib import Path

    from zerotir.config import ConfigError, load_config
    from zerotir.data import DataError
    from zerotir.eval.runner import EvalJob, EvalSetupError, parse_tool_budgets, run_eval
    from zerotir.models import ModelError
    from zerotir.telemetry import setup_logging

    try:
        # A toy model speaks the toy template: its preset unless a config is given (the same rule as rollout).
        cfg = load_config(preset_for(config, model), set_)
        e = cfg.eval
        job = EvalJob(
            model=model or cfg.model.path,
            benchmarks=parse_benchmark_list(benchmarks) if benchmarks else list(e.benchmarks),
            out=Path(out) if out else Path("runs") / "eval",
            tool_budgets=parse_tool_budgets(max_tool_calls if max_tool_calls is not None else e.max_tool_calls),
            samples=samples if samples is not None else e.samples,
            temperature=temperature if temperature is not None else e.temperature,
            top_p=top_p if top_p is not None else e.top_p,
            limit=limit if limit is not None else e.limit,
            seed=seed, data_dir=data_dir if data_dir is not None else e.data_dir, source=source, device=device,
            overwrite=overwrite, progress=not no_progress, cfg=cfg,
        )
        setup_logging(cfg.logging.level)
        rows = run_eval(job)
    except (ConfigError, BenchmarkError, DataError, ModelError, EvalSetupError) as err:
        fail(str(err))
    typer.echo((job.out / "results.md").read_text())
    typer.echo(f"{len(rows)} result rows; samples, results.csv and results.md in {job.out}")
