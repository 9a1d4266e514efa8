import typer

from zerotir.cli_common import not_yet

app = typer.Typer(no_args_is_help=True)


@app.command("build-base")
def build_base() -> None:
    """Pretrain the tiny toy base model from scratch."""
    not_yet("toy build-base", "toy world")


def demo_command() -> None:
    """The toy world: RL teaches a tiny model to write code (what `make demo` runs)."""
    not_yet("demo", "toy world")
