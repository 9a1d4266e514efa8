import typer

from zerotir.cli_common import not_yet

app = typer.Typer(no_args_is_help=True)


@app.command("exec")
def exec_command() -> None:
    """Run stdin once in the sandbox and print the ExecResult as JSON."""
    not_yet("sandbox exec", "sandbox")
