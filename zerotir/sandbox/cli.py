"""`zerotir sandbox serve | exec | bench`. Heavy imports live inside the command bodies."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from zerotir.cli_common import fail

app = typer.Typer(no_args_is_help=True)

_ISO_HELP = "Isolation: full (namespaces + own uid + seccomp; refuses to start if a layer is missing), rlimits, none."


_CORES_HELP = "CPU cores one execution's processes may use together (per-call cgroup quota)."
_QUOTAS_HELP = "Per-call cgroup quotas (memory, pids, CPU); --no-quotas falls back to per-process limits (warns)."


_PREIMPORT_HELP = ("Comma-separated modules the warm workers import before forking (default: the math stack, "
                   "numpy,sympy,scipy,...; '' for none: cheaper forks, see SandboxConfig.preimport).")


def _sandbox(workers: int, timeout_s: float, memory_mb: int, max_output_bytes: int, isolation: str,
             cpu_cores: float = 1.0, quotas: bool = True, preimport: str | None = None):
    from zerotir.config.schema import SANDBOX_PREIMPORT
    from zerotir.sandbox import Sandbox, SandboxUnavailable

    modules = SANDBOX_PREIMPORT if preimport is None else [m.strip() for m in preimport.split(",") if m.strip()]
    try:
        return Sandbox(workers=workers, timeout_s=timeout_s, memory_mb=memory_mb, max_output_bytes=max_output_bytes,
                       isolation=isolation, cpu_cores=cpu_cores, quotas=quotas, preimport=modules)
    except SandboxUnavailable as e:
        fail(f"sandbox unavailable: {e}")
    except ValueError as e:
        fail(f"--preimport: {e}")


@app.command("serve")
def serve_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (loopback by default; anything else needs a "
                                                          "token or --insecure-no-token)."),
    port: int = typer.Option(8080, "--port", help="TCP port."),
    workers: int = typer.Option(2, "--workers", help="Warm worker processes (and concurrent executions)."),
    token: str = typer.Option("", "--token", envvar="ZEROTIR_SANDBOX_TOKEN",
                              help="Require 'Authorization: Bearer <token>' (or set ZEROTIR_SANDBOX_TOKEN)."),
    insecure_no_token: bool = typer.Option(False, "--insecure-no-token",
                                           help="Allow a non-loopback bind without a token (anyone who can reach it "
                                                "can run code)."),
    api: str = typer.Option("both", "--api", help="both (default), zerotir (/v1/...) or sandboxfusion (POST /run_code, "
                                                  "SandboxFusion's schema)."),
    timeout_s: float = typer.Option(5.0, "--timeout-s", help="Default wall-clock limit per execution."),
    memory_mb: int = typer.Option(512, "--memory-mb", help="Memory per execution, its children included."),
    max_output_bytes: int = typer.Option(16384, "--max-output-bytes", help="Cap on captured stdout and stderr."),
    isolation: str = typer.Option("full", "--isolation", help=_ISO_HELP),
    cpu_cores: float = typer.Option(1.0, "--cpu-cores", help=_CORES_HELP),
    quotas: bool = typer.Option(True, "--quotas/--no-quotas", help=_QUOTAS_HELP),
    preimport: Optional[str] = typer.Option(None, "--preimport", help=_PREIMPORT_HELP),
    max_body_bytes: int = typer.Option(4 * 1024 * 1024, "--max-body-bytes", help="Largest request body (else 413)."),
    max_batch: int = typer.Option(1024, "--max-batch", help="Most requests per /v1/batch call (else 413)."),
    per_client: int = typer.Option(0, "--per-client-concurrency",
                                   help="Most executions one client has in the pool at once (0: 2 x workers)."),
) -> None:
    """Serve the sandbox over HTTP/JSON (zerotir API and SandboxFusion's /run_code; /health, /metrics)."""
    from zerotir.sandbox.server import APIS, ServerLimits, check_bind, serve
    from zerotir.telemetry import setup_logging

    setup_logging()
    if api not in APIS:
        fail(f"--api must be one of {', '.join(APIS)}, got {api!r}")
    try:
        check_bind(host, token, insecure_no_token)  # before the pool starts: refuse fast
    except ValueError as e:
        fail(str(e))
    limits = ServerLimits(max_body_bytes=max_body_bytes, max_batch=max_batch,
                          per_client_concurrency=per_client or 2 * workers)
    sb = _sandbox(workers, timeout_s, memory_mb, max_output_bytes, isolation, cpu_cores, quotas, preimport)
    typer.echo(f"zerotir sandbox: serving on http://{host}:{port} (api={api}, workers={workers}, "
               f"isolation={isolation}{', token required' if token else ''})", err=True)
    try:
        serve(sb, host=host, port=port, token=token, api=api, insecure_no_token=insecure_no_token, limits=limits)
    finally:
        sb.close()


@app.command("exec")
def exec_command(
    timeout_s: float = typer.Option(5.0, "--timeout-s", help="Wall-clock limit."),
    memory_mb: int = typer.Option(512, "--memory-mb", help="Memory of the execution, its children included."),
    max_output_bytes: int = typer.Option(16384, "--max-output-bytes", help="Cap on captured stdout and stderr."),
    isolation: str = typer.Option("full", "--isolation", help=_ISO_HELP),
    cpu_cores: float = typer.Option(1.0, "--cpu-cores", help=_CORES_HELP),
    quotas: bool = typer.Option(True, "--quotas/--no-quotas", help=_QUOTAS_HELP),
    url: str = typer.Option("", "--url", help="Run on a sandbox service instead of a local pool."),
    token: str = typer.Option("", "--token", envvar="ZEROTIR_SANDBOX_TOKEN", help="Token for --url."),
) -> None:
    """Run stdin once in the sandbox and print the ExecResult as JSON."""
    code = sys.stdin.read()
    if url:
        from zerotir.sandbox.client import RemoteSandbox

        with RemoteSandbox(url, token=token, timeout_s=timeout_s) as sb:
            r = sb.run(code)
    else:
        with _sandbox(1, timeout_s, memory_mb, max_output_bytes, isolation, cpu_cores, quotas) as sb:
            r = sb.run(code)
    typer.echo(json.dumps(r.to_dict(), ensure_ascii=False))


@app.command("bench")
def bench_command(
    workers: int = typer.Option(2, "--workers", help="Warm workers."),
    n: int = typer.Option(100, "--n", help="Sandbox calls per (snippet, concurrency) cell (at least 4 x callers)."),
    baseline: int = typer.Option(8, "--baseline", help="Fresh-interpreter calls per cell (at least one per caller)."),
    concurrency: str = typer.Option("1,4,16,64", "--concurrency", help="Comma-separated numbers of parallel callers."),
    isolation: str = typer.Option("full", "--isolation", help=_ISO_HELP),
    json_out: str = typer.Option("", "--json", help="Also write the figures to this file."),
    rollout: int = typer.Option(0, "--rollout", help="Instead: time N one-call sessions at once (a rollout step's "
                                                      "pattern), default warm stack vs --preimport '' side by side."),
    reps: int = typer.Option(3, "--reps", help="Repetitions per arm with --rollout."),
) -> None:
    """p50/p90/p99 latency and exec/s at several concurrencies, trivial and sympy snippets, vs. a fresh interpreter."""
    from zerotir.sandbox.bench import run_bench, run_rollout_bench

    if rollout:
        if reps < 1:
            fail(f"--reps must be >= 1, got {reps}")
        res = run_rollout_bench(workers=workers, sessions=rollout, reps=reps, isolation=isolation, log=typer.echo)
        if json_out:
            with open(json_out, "w") as f:
                json.dump(res, f, indent=1)
        return

    try:
        levels = tuple(int(x) for x in concurrency.split(",") if x.strip())
    except ValueError:
        fail(f"--concurrency must be comma-separated integers, got {concurrency!r}")
    if not levels or min(levels) < 1:
        fail(f"--concurrency needs numbers >= 1, got {concurrency!r}")
    out = run_bench(workers=workers, n_latency=n, n_baseline=baseline, isolation=isolation, log=typer.echo,
                    concurrencies=levels)
    if json_out:
        with open(json_out, "w") as f:
            json.dump(out, f, indent=1)
