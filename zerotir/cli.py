"""The `zerotir` command. Each stage owns its sub-commands in `zerotir/<stage>/cli.py`; this file only wires them.

Sub-command modules import heavy libraries (torch, transformers) inside the command body, so `zerotir --help`
stays instant.
"""

from __future__ import annotations

from typing import Optional

import typer

from zerotir import __version__
from zerotir.analysis.cli import analyze_command
from zerotir.cli_common import quiet_libraries
from zerotir.eval.cli import eval_command
from zerotir.models.cli import app as models_app
from zerotir.rollout.cli import rollout_command
from zerotir.sandbox.cli import app as sandbox_app
from zerotir.study.cli import study_command
from zerotir.toy.cli import app as toy_app
from zerotir.toy.cli import demo_command
from zerotir.train.cli import train_command

app = typer.Typer(
    name="zerotir",
    help="Train language models with RL to write and run Python while solving math (tool-integrated reasoning).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"zerotir {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                           help="Print the version and exit."),
) -> None:
    """zerotir: RL from zero to tool-integrated reasoning."""
    quiet_libraries()


@app.command("config")
def config_command(
    config: Optional[str] = typer.Argument(None, help="YAML file or preset name (toy, paper); defaults if omitted."),
    set_: list[str] = typer.Option([], "--set", help="Dotted override key=value (repeatable)."),
    doc: bool = typer.Option(False, "--doc", help="Print every key with its documentation."),
) -> None:
    """Print a resolved configuration (YAML), or every key with its docstring (--doc)."""
    import yaml

    from zerotir.config import ConfigError, config_to_dict, describe_config, load_config

    try:
        cfg = load_config(config, set_)
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(describe_config(cfg) if doc else yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


app.command("train")(train_command)
app.command("eval")(eval_command)
app.command("rollout")(rollout_command)
app.command("analyze")(analyze_command)
app.command("study")(study_command)
app.command("demo")(demo_command)
app.add_typer(sandbox_app, name="sandbox", help="Run, serve and benchmark the isolated Python sandbox.")
app.add_typer(models_app, name="models", help="Import and inspect models (GGUF → HF directory).")
app.add_typer(toy_app, name="toy", help="The toy world: tasks and the tiny base model.")

if __name__ == "__main__":  # pragma: no cover
    app()
