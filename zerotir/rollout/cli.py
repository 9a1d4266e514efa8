import typer

from zerotir.cli_common import not_yet


def rollout_command(model: str = typer.Option(..., "--model", help="HF model directory.")) -> None:
    """Sample tool-integrated trajectories and print transcripts."""
    not_yet("rollout", "rollout engine")
