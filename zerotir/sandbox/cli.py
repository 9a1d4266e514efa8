"""`zerotir sandbox serve | exec | bench`. Heavy imports live inside the command bodies."""

from __future__ import annotations

import json
import sys

import typer

from zerotir.cli_common import fail

app = typer.Typer(no_args_is_help=True)

_ISO_HELP = "Isolation: full (namespaces + own uid + seccomp; refuses to start if a layer is missing), rlimits, none."


def _sandbox(workers: int, timeout_s: float, memory_mb: int, max_output_bytes: int, isolation: str):
    from zerotir.sandbox import Sandbox, SandboxUnavailable

    try:
        return Sandbox(workers=workers, timeout_s=timeout_s, memory_mb=memory_mb, max_output_bytes=max_output_bytes,
                       isolation=isolation)
    except SandboxUnavailable as e:
        fail(f"sandbox unavailable: {e}")


@app.command("serve")
def serve_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (loopback by default)."),
    port: int = typer.Option(8080, "--port", help="TCP port."),
    workers: int = typer.Option(2, "--workers", help="Warm worker processes (and concurrent executions)."),
    token: str = typer.Option("", "--token", envvar="ZEROTIR_SANDBOX_TOKEN",
                              help="Require 'Authorization: Bearer <token>' (or set ZEROTIR_SANDBOX_TOKEN)."),
    timeout_s: float = typer.Option(5.0, "--timeout-s", help="Default wall-clock limit per execution."),
    memory_mb: int = typer.Option(512, "--memory-mb", help="Memory (address space) per execution."),
    max_output_bytes: int = typer.Option(16384, "--max-output-bytes", help="Cap on captured stdout and stderr."),
    isolation: str = typer.Option("full", "--isolation", help=_ISO_HELP),
) -> None:
    """Serve the sandbox over HTTP/JSON (single + batch execution, sessions, /health, /metrics)."""
    from zerotir.sandbox.remote import serve
    from zerotir.telemetry import setup_logging

    setup_logging()
    sb = _sandbox(workers, timeout_s, memory_mb, max_output_bytes, isolation)
    typer.echo(f"zerotir sandbox: serving on http://{host}:{port} (workers={workers}, isolation={isolation}"
               f"{', token required' if token else ''})", err=True)
    try:
        serve(sb, host=host, port=port, token=token)
    finally:
        sb.close()


@app.command("exec")
def exec_command(
    timeout_s: float = typer.Option(5.0, "--timeout-s", help="Wall-clock limit."),
    memory_mb: int = typer.Option(512, "--memory-mb", help="Memory (address space) limit."),
    max_output_bytes: int = typer.Option(16384, "--max-output-bytes", help="Cap on captured stdout and stderr."),
    isolation: str = typer.Option("full", "--isolation", help=_ISO_HELP),
    url: str = typer.Option("", "--url", help="Run on a sandbox service instead of a local pool."),
    token: str = typer.Option("", "--token", envvar="ZEROTIR_SANDBOX_TOKEN", help="Token for --url."),
) -> None:
    """Run stdin once in the sandbox and print the ExecResult as JSON."""
    code = sys.stdin.read()
    if url:
        from zerotir.sandbox.remote import RemoteSandbox

        with RemoteSandbox(url, token=token, timeout_s=timeout_s) as sb:
            r = sb.run(code)
    else:
        with _sandbox(1, timeout_s, memory_mb, max_output_bytes, isolation) as sb:
            r = sb.run(code)
    typer.echo(json.dumps(r.to_dict(), ensure_ascii=False))


@app.command("bench")
def bench_command(
    workers: int = typer.Option(2, "--workers", help="Warm workers."),
    n: int = typer.Option(100, "--n", help="Sequential calls per snippet for latency."),
    baseline: int = typer.Option(15, "--baseline", help="Fresh-interpreter calls per snippet."),
    seconds: float = typer.Option(5.0, "--seconds", help="Throughput phase length per snippet."),
    isolation: str = typer.Option("full", "--isolation", help=_ISO_HELP),
) -> None:
    """p50/p99 latency and exec/s for a trivial and a sympy snippet vs. a fresh interpreter per call."""
    from zerotir.sandbox.bench import run_bench

    run_bench(workers=workers, n_latency=n, n_baseline=baseline, throughput_s=seconds, isolation=isolation,
              log=typer.echo)
