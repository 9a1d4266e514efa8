import typer

from zerotir.cli_common import not_yet


def eval_command(model: str = typer.Option(..., "--model", help="HF model directory.")) -> None:
    """Evaluate a model on math benchmarks with tools."""
    not_yet("eval", "evaluation harness")
