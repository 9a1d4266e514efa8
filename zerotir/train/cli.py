import typer

from zerotir.cli_common import not_yet


def train_command(config: str = typer.Option("toy", "--config", help="YAML file or preset name.")) -> None:
    """RL-train a model with tools."""
    not_yet("train", "training loop")
