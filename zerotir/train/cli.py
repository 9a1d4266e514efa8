"""`zerotir train`: RL-train a model with tools. Heavy imports live inside the command body."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from zerotir.cli_common import fail


def train_command(
    config: Optional[str] = typer.Option(None, "--config", "-c",
                                         help="YAML file or preset name (toy, paper). Default: the toy preset for a "
                                              "toy model (the default), else the schema's defaults; a resumed run's "
                                              "config.yaml."),
    set_: list[str] = typer.Option([], "--set", help="Dotted override key=value (repeatable), e.g. train.steps=5."),
    resume: Optional[str] = typer.Option(None, "--resume",
                                         help="Continue a run: --resume DIR (a run dir or one of its checkpoints), "
                                              "or --resume latest for the newest run of this name."),
    run_dir: Optional[str] = typer.Option(None, "--run-dir", help="Write the run here instead of train.run_dir."),
    backend: Optional[str] = typer.Option(None, "--backend", help="local or ray (sets train.backend)."),
    rollout_workers: Optional[int] = typer.Option(None, "--rollout-workers", help="Ray rollout actors."),
    learners: Optional[int] = typer.Option(None, "--learners", help="Ray data-parallel learners."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address ('' starts a local Ray)."),
) -> None:
    """RL-train a model with tools; writes a run dir (config.yaml, metrics.jsonl, transcripts/, checkpoints/)."""
    from zerotir.config import ConfigError, load_config

    resume_arg: str | bool = False
    overrides = list(set_)
    for flag, key in ((backend, "train.backend"), (rollout_workers, "train.rollout_workers"),
                      (learners, "train.learners"), (address, "train.ray_address")):
        if flag is not None:
            overrides.append(f"{key}={flag}")
    if resume is not None:
        resume_arg = True if resume == "latest" else resume
        if config is None and resume != "latest":  # a resumed run keeps its own resolved config
            rdir = Path(resume)
            rdir = rdir.parent.parent if rdir.parent.name == "checkpoints" else rdir
            if (rdir / "config.yaml").is_file():
                config = str(rdir / "config.yaml")
    from zerotir.cli_common import preset_for

    model = next((o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("model.path=")), "toy")
    try:
        cfg = load_config(preset_for(config, model), overrides)   # the toy preset for a toy model, as rollout/eval
    except ConfigError as e:
        fail(str(e))
        return
    from zerotir.train.loop import RunHealthError, train

    backend_factory = None
    if cfg.train.backend == "ray":
        from zerotir.distributed import ray_backend

        backend_factory = ray_backend()
    elif cfg.train.backend != "local":
        fail(f"train.backend: unknown backend '{cfg.train.backend}' (local, ray)")
        return
    from zerotir.data import DataError
    from zerotir.models import ModelError
    from zerotir.sandbox import SandboxUnavailable

    try:
        out = train(cfg, resume=resume_arg, run_dir=run_dir, backend_factory=backend_factory)
    except (DataError, ModelError, SandboxUnavailable, RunHealthError, FileNotFoundError, FileExistsError,
            ValueError) as e:
        fail(str(e))
        return
    typer.echo(f"run dir: {out}")
