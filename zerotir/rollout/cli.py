"""`zerotir rollout`: sample tool-integrated trajectories from a model, save them, and show what the model did."""

from __future__ import annotations

from typing import Optional

import typer

from zerotir.cli_common import default_out_dir, fail, preset_for


def print_transcripts(trajs, tokenizer, show: int) -> None:
    """Readable transcripts of the first `show` trajectories; tool output blocks highlighted."""
    from rich.console import Console
    from rich.text import Text

    console = Console()
    for t in trajs[:show]:
        calls = ", ".join(c.status for c in t.tool_calls) or "none"
        console.rule(f"[bold]{t.problem_id}[/] sample {t.sample_index} · finish={t.finish_reason} · "
                     f"{len(t.response_ids)} tokens ({t.num_sampled_tokens} sampled) · tool calls: {calls}"
                     + (" · SANDBOX ERROR" if t.sandbox_error else ""))
        text = Text(t.prompt_text, style="dim")
        for s in t.segments:
            piece = tokenizer.decode(t.response_ids[s.start:s.end], skip_special_tokens=True)
            text.append(piece, style="bold cyan on grey11" if s.kind == "tool" else "")
        console.print(text)
    if trajs:
        console.rule()


def rollout_command(
    model: str = typer.Option(..., "--model", help="HF model directory (or 'toy')."),
    problems: str = typer.Option(..., "--problems", help="Problems: FILE.jsonl, toy:<split> or hf:<id>."),
    n: int = typer.Option(4, "--n", help="Samples per problem."),
    max_tool_calls: Optional[int] = typer.Option(None, "--max-tool-calls",
                                                 help="Executed tool calls per trajectory (default: config)."),
    out: Optional[str] = typer.Option(None, "--out", help="Write one Trajectory per line here (default: "
                                      "runs/rollout-<time>/trajectories.jsonl)."),
    limit: int = typer.Option(0, "--limit", help="Use the first N problems (0 = all)."),
    config: Optional[str] = typer.Option(None, "--config", help="YAML config or preset (rollout/sandbox sections); "
                                         "default: the toy preset for a toy model, as `zerotir eval` does."),
    set_: list[str] = typer.Option([], "--set", help="Dotted override, e.g. rollout.temperature=0.6 (repeatable)."),
    template: Optional[str] = typer.Option(None, "--template", help="zerotir | toy | chat (default: config)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature (0 = greedy)."),
    max_total_tokens: Optional[int] = typer.Option(None, "--max-total-tokens", help="Response token budget."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    show: int = typer.Option(3, "--show", help="Print transcripts of the first N trajectories."),
) -> None:
    """Sample tool-integrated trajectories and print transcripts."""
    import time
    from pathlib import Path

    from zerotir.config import ConfigError, load_config
    from zerotir.data import DataError, load_problems
    from zerotir.models import ModelError
    from zerotir.rollout.engines import make_engine
    from zerotir.rollout.tir import rollout
    from zerotir.sandbox import SandboxUnavailable, make_sandbox
    from zerotir.types import RecordError, write_jsonl

    try:
        cfg = load_config(preset_for(config, model), list(set_))
    except ConfigError as e:
        fail(str(e))
    rc = cfg.rollout
    if template is not None:
        rc.template = template
    if temperature is not None:
        rc.temperature = temperature
    if max_total_tokens is not None:
        rc.max_total_tokens = max_total_tokens
    if max_tool_calls is None:
        max_tool_calls = rc.max_tool_calls
    try:
        probs = load_problems(problems, limit=limit).problems
    except (DataError, RecordError, ValueError) as e:
        fail(str(e))
    if not probs:
        fail(f"{problems}: no problems")
    # The sandbox starts before the model loads: one that cannot start (no bubblewrap, a bad isolation value) fails
    # in one line within a second instead of after the weights are read.
    try:
        sb = make_sandbox(cfg.sandbox)
    except (SandboxUnavailable, ValueError) as e:
        fail(str(e))
    with sb:
        try:
            engine = make_engine(cfg, model_path=model, device=device, seed=seed)
        except (ModelError, ValueError) as e:
            fail(str(e))
        tok = engine.tokenizer
        t0 = time.perf_counter()
        try:
            trajs = rollout(probs, engine, sb, rc, n_samples=n, max_tool_calls=max_tool_calls, seed=seed)
        except ValueError as e:
            fail(str(e))
    dt = time.perf_counter() - t0
    # Created only now, after the model and sandbox worked: a failed start leaves no directory behind.
    out_path = Path(out) if out else Path(default_out_dir("rollout")) / "trajectories.jsonl"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_path, trajs)
    print_transcripts(trajs, tok, show)
    sampled = sum(t.num_sampled_tokens for t in trajs)
    calls = sum(t.num_tool_calls for t in trajs)
    typer.echo(f"{len(trajs)} trajectories → {out_path} in {dt:.1f}s ({sampled / max(dt, 1e-9):.0f} sampled tok/s); "
               f"{calls} tool calls executed, "
               f"{sum(not c.executed for t in trajs for c in t.tool_calls)} over budget, "
               f"{sum(t.sandbox_error for t in trajs)} sandbox errors, "
               f"{sum(t.finish_reason == 'length' for t in trajs)} hit the token budget")
