"""`zerotir study SPEC.yaml`: run (or continue) a study. Heavy imports live inside the command body."""

from __future__ import annotations

from typing import Optional

import typer

from zerotir.cli_common import fail


def study_command(
    spec: str = typer.Argument(..., help="Study spec (YAML), e.g. configs/studies/toy-scaling.yaml."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Study dir (default: studies/<name>). Re-running "
                                                                 "on it continues the study."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Cells run at once (Ray: tasks in flight); each gets cpu_count // jobs "
                                                     "threads unless --cpus-per-run."),
    backend: str = typer.Option("local", "--backend", help="local (subprocesses here) or ray (one task per cell)."),
    address: str = typer.Option("", "--address", help="Ray cluster address ('' starts a local Ray)."),
    cpus_per_run: int = typer.Option(0, "--cpus-per-run", help="CPU threads per cell (and Ray num_cpus); "
                                                               "0 = cpu_count // jobs."),
    preregister: bool = typer.Option(False, "--preregister", help="Write predictions.json from the other cells "
                                                                  "before the held-out (largest-size) cells run."),
    analysis: bool = typer.Option(True, "--analysis/--no-analysis", help="Analyse the whole study at the end."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the spec, list the cells and stop."),
) -> None:
    """Run every cell of a study spec as a run dir under one study dir, resumably, then analyse the whole study."""
    from pathlib import Path

    from zerotir.study import SpecError, StudyError, load_spec, run_study

    if jobs < 1:
        fail("--jobs must be >= 1")
    try:
        s = load_spec(spec)
    except SpecError as e:
        fail(str(e))
        return
    study_dir = Path(out or Path("studies") / s.name)
    if dry_run:
        for c in s.cells:
            mark = "  (held out)" if c.name in s.held_out else ""
            typer.echo(f"{c.name}: {' '.join(f'{k}={v}' for k, v in c.own) or '(base)'}{mark}")
        typer.echo(f"{len(s.cells)} cells → {study_dir}")
        return
    try:
        run_study(s, study_dir, jobs=jobs, backend=backend, address=address, cpus_per_run=cpus_per_run,
                  preregister=preregister, analysis=analysis, say=lambda m: typer.echo(m))
    except (SpecError, StudyError, ValueError) as e:
        fail(str(e), code=1 if isinstance(e, StudyError) else 2)
    except KeyboardInterrupt:  # the running cells were stopped; their checkpoints stay
        fail(f"interrupted; re-run the same command to continue {study_dir}", code=130)
