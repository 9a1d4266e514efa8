"""Small helpers shared by the sub-command modules: one error line, the preset a model implies, default output
dirs, and quiet third-party output outside a terminal. A leaf: imports nothing from zerotir."""

from __future__ import annotations

import os
import sys
import time

import typer


def not_yet(what: str, issue: str) -> None:
    """Exit with a clear message for a command whose implementation has not landed yet."""
    typer.echo(f"zerotir {what}: not yet available ({issue}).", err=True)
    raise typer.Exit(3)


def fail(message: str, code: int = 2) -> None:
    """Print one clear error line and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def is_toy_model(model: str | None) -> bool:
    """'toy' or a toy size name ('toy-0.2m', ...): the names `models.resolve_model_path` maps to toy bases."""
    return bool(model) and (model == "toy" or (model.startswith("toy-") and "/" not in model))


def preset_for(config: str | None, model: str | None) -> str | None:
    """The config to load: the one given, else the toy preset for a toy model (the toy template and token budgets
    the toy bases were trained with), else None (the schema's defaults). `rollout` and `eval` both call this, so
    one model gets one template and budget whichever command samples it."""
    if config:
        return config
    return "toy" if is_toy_model(model) else None


def default_out_dir(kind: str) -> str:
    """'runs/<kind>-<YYYYmmdd-HHMMSS>', next to training runs (`train.run_dir` is 'runs/{name}-{time}')."""
    return os.path.join("runs", f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}")


def quiet_libraries(tty: bool | None = None) -> None:
    """Library progress bars ("Loading weights", "Writing model shards", hub downloads) only in a terminal: in a
    log file or CI they are hundreds of carriage-return lines. Environment switches are set too, so worker
    processes started later (Ray actors, spawned learners) inherit the choice. A user's explicit setting wins."""
    if tty is None:
        tty = sys.stderr.isatty()
    if tty or "HF_HUB_DISABLE_PROGRESS_BARS" in os.environ:
        return
    # huggingface_hub reads this at import and transformers' own bars follow it (transformers.utils.logging's
    # _tqdm_active); as an environment variable it also reaches worker processes started later (Ray actors).
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:  # already imported: switch the live flag too
        sys.modules["transformers"].utils.logging.disable_progress_bar()
