import typer

from zerotir.cli_common import not_yet


def analyze_command(run_dirs: list[str] = typer.Argument(..., help="Run directories."),
                    out: str = typer.Option("report", "--out", help="Report directory.")) -> None:
    """Fit scaling laws to runs' metrics and write a report."""
    not_yet("analyze", "scaling analysis")
