"""zerotir.sandbox: run untrusted Python fast, isolated and statefully (placeholder docstring, expanded below)."""

from zerotir.sandbox.pool import ISOLATION_LEVELS, Sandbox, SandboxUnavailable, Session, check_isolation
from zerotir.types import ExecResult

__all__ = ["Sandbox", "Session", "ExecResult", "SandboxUnavailable", "ISOLATION_LEVELS", "check_isolation",
           "make_sandbox"]


def make_sandbox(cfg):
    """The local pool or the remote client for a `zerotir.config.SandboxConfig` (same interface)."""
    if cfg.backend == "remote":
        from zerotir.sandbox.remote import RemoteSandbox

        return RemoteSandbox(cfg.url, token=cfg.token, timeout_s=cfg.timeout_s, concurrency=cfg.remote_concurrency,
                             retries=cfg.remote_retries)
    if cfg.backend != "local":
        raise ValueError(f"sandbox.backend must be 'local' or 'remote', got {cfg.backend!r}")
    return Sandbox(workers=cfg.workers, timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb,
                   max_output_bytes=cfg.max_output_bytes, isolation=cfg.isolation,
                   max_concurrency=cfg.max_concurrency or None)
