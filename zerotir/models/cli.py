import typer

from zerotir.cli_common import not_yet

app = typer.Typer(no_args_is_help=True)


@app.command("import-gguf")
def import_gguf(src: str = typer.Argument(..., help="GGUF file.")) -> None:
    """Convert a GGUF file into an HF model directory (offline)."""
    not_yet("models import-gguf", "evaluation harness")
