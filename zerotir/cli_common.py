"""Small helpers shared by the sub-command modules."""

from __future__ import annotations

import typer


def not_yet(what: str, issue: str) -> None:
    """Exit with a clear message for a command whose implementation has not landed yet."""
    typer.echo(f"zerotir {what}: not yet available ({issue}).", err=True)
    raise typer.Exit(3)


def fail(message: str, code: int = 2) -> None:
    """Print one clear error line and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
