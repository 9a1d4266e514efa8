"""zerotir.sandbox: run the model's untrusted Python fast, isolated and (optionally) statefully.

    from zerotir.sandbox import Sandbox
    with Sandbox(workers=4, timeout_s=2.0, memory_mb=512, cpu_cores=1) as sb:   # isolation="full", quotas on
        r = sb.run("print(1+1)")                  # ExecResult(status='ok', stdout='2\\n', ...)
        r = await sb.arun(code)                   # from any event loop
        with sb.session() as s:                   # one per trajectory: variables persist between calls
            s.run("x = 21"); s.run("print(x * 2)")
            branch = s.fork()                     # copy-on-write clone of the live state

`make_sandbox(cfg.sandbox)` returns this local pool or `RemoteSandbox` (HTTP client of `zerotir sandbox serve`),
with the same interface (`protocol.SandboxLike`). Calls never raise: the result's `status` is ok | error (exception or
non-zero exit) | timeout | oom (MemoryError, or the call's memory quota was exceeded) | killed (a signal) |
sandbox_error (the infrastructure failed, never the code's fault; inside the pool that is a `SandboxError`, turned
into a result in one place). `Session.fork()` raises `SandboxForkError` when it cannot clone (never a silent fresh
session). A pool is safe to use from many threads and many asyncio tasks at once.

How it runs. Each worker is a warm "zygote" Python that has imported math, fractions, itertools, numpy, sympy, scipy
(and warmed sympy once; `preimport` chooses the third-party modules: each one held makes every fork dearer). A
stateless call takes a pre-forked context from a worker, forks the cell from it, and throws the context away
afterwards; a session keeps its context, forks one process per cell and keeps it if the cell finishes (so a cell
that times out or crashes is rolled back to the state before it). A fresh interpreter per call
costs ~0.45 s with sympy; a warm fork costs a few ms.

What isolation='full' (the default) protects against, and how (each layer is checked at start; a missing one makes
the sandbox refuse to start, naming it, unless the user picks a weaker level, which logs a warning):
  * Reading host files: the worker runs in bubblewrap with a new mount namespace holding only read-only /usr, /etc,
    the interpreter's prefix and venv (not the project tree, not /root, not /home); /etc/shadow is masked.
  * Learning the host's layout: every interpreter prefix (pyenv, venv) is an overlayfs at /opt/zerotir-python/pN,
    sys.path/PATH/PYTHONPATH point there; /proc/self/mountinfo, sys.path, sys.prefix, the environment, listings
    of / and of the mount points' parents, module files and tracebacks name no host path (isolation.py).
  * Writing anywhere: everything is read-only except a private tmpfs /tmp and /dev/shm (64 MB, 4096 inodes) per
    context, gone with it; RLIMIT_FSIZE caps single files.
  * Host secrets: the environment is cleared; the code cannot see any host process (own pid namespace) or its
    /proc entries, environment or memory.
  * Network: a network namespace with only a loopback device of its own (host services on 127.0.0.1, the sandbox
    server included, and host abstract unix sockets are unreachable); seccomp also refuses non-unix sockets.
  * Privilege: each context runs under its own unprivileged uid (random per-worker uid block, one uid per context),
    with no capabilities, no_new_privs, non-dumpable (no ptrace, no /proc/pid/mem), and a seccomp filter denying
    ptrace, process_vm_*, mount, unshare/setns and namespace clone flags, bpf, perf, keyctl, io_uring, module and
    reboot calls, and more.
  * Resource exhaustion, per call: each context and everything its code forks is one cgroup (v2 or v1, checked at
    start; quotas.py) holding memory_mb in total (memory added to the warm interpreter, copy-on-write copies of its
    pages included: a full gc.collect() copies ~21 MB; plus its tmpfs), nproc tasks and cpu_cores of CPU. Memory
    exceeded -> the kernel kills inside that cgroup only and the call is 'oom' (8 forked children x 300 MB under
    512 MB -> oom, at most one survives; without quotas all 8, 2.4 GB, were held). Per process as well: RLIMIT_AS (memory_mb on top of the warm interpreter: a single huge allocation is a MemoryError),
    RLIMIT_CPU, RLIMIT_NPROC (per uid), RLIMIT_NOFILE; a wall-clock deadline enforced by the parent (SIGKILL at the
    deadline, result within ~0.1 s, partial output kept); stdout and stderr capped per stream.
  * Leftovers: every context is the init of its own pid namespace; killing it kills every process the code started
    (daemons, setsid'd grandchildren). Nothing outlives a stateless call; nothing outlives a session.
  * State leaking between calls/trajectories: stateless calls fork from the pristine zygote; sessions are separate
    namespaces and uids from each other.
  * Infrastructure crashes: a worker that dies is replaced by a warm spare at once (a new spare boots behind it);
    calls in flight on it return sandbox_error; a session whose kernel was lost restarts fresh and says so.

What it does NOT protect against:
  * Kernel exploits. Namespaces + seccomp reduce the attack surface; they are not a VM. Use a VM/gVisor boundary
    for adversaries that may hold kernel 0-days.
  * Contention below the quotas: calls share the machine's cores, RAM bandwidth and caches; the quotas bound each
    call and the pool bounds concurrency (workers x cpu_cores cores, concurrency x memory_mb RAM at most), but
    nothing reserves capacity for the caller. quotas=False (logs a warning) falls back to per-process limits: one
    call can then hold ~nproc x memory_mb and several cores. On cgroup v1 each context joins its groups itself
    (one thread: no global lock); on v2 joining takes the kernel's cgroup lock (a brief stall of forks machine-wide
    per context unless cgroup2 is mounted with favordynmods).
  * Disk I/O and page-cache pressure on the read-only system files are not limited (no io controller).
  * Forks of one session share its pid namespace, uid, /tmp and quotas (they are branches of one trajectory group):
    code in one branch can kill or disturb its siblings or use up their memory_mb (they then get 'killed', 'oom' or
    a fresh kernel), never other sessions.
  * File contents under the interpreter's prefix still carry build-time paths: sysconfig's build variables (e.g.
    get_config_var('prefix')), pkg-config files and script shebangs of the base interpreter name the directory it
    was built for (e.g. a pyenv under /root). Paths the code can list or is shown (see above) are neutral.
  * The code can lie about itself (e.g. print a fake traceback); it cannot change another call's result.
  * The workers' zygote runs as root inside bubblewrap (read-only view, no network, capabilities limited to
    SETUID/SETGID/SYS_ADMIN/KILL) so that it can create namespaces and drop to per-context uids; it never runs
    model code. isolation='full' therefore needs root (and bubblewrap, libseccomp via pyseccomp).
  * isolation='rlimits': rlimits, a cleared environment, a private temp dir and process-group cleanup only (no
    filesystem, network or pid isolation, no uid change; a child that leaves the process group can outlive its call
    until the zygote's orphan sweep). isolation='none': timeouts and output caps only.
"""

from zerotir.sandbox.errors import SandboxError, SandboxUnavailable
from zerotir.sandbox.pool import ISOLATION_LEVELS, Sandbox, SandboxForkError, Session, check_isolation
from zerotir.types import ExecResult

__all__ = ["Sandbox", "Session", "ExecResult", "SandboxUnavailable", "SandboxError", "SandboxForkError",
           "ISOLATION_LEVELS", "check_isolation", "make_sandbox"]


def make_sandbox(cfg):
    """The local pool or the remote client for a `zerotir.config.SandboxConfig` (same interface)."""
    if cfg.backend == "remote":
        from zerotir.sandbox.client import RemoteSandbox

        return RemoteSandbox(cfg.url, token=cfg.token, timeout_s=cfg.timeout_s, concurrency=cfg.remote_concurrency,
                             retries=cfg.remote_retries)
    if cfg.backend != "local":
        raise ValueError(f"sandbox.backend must be 'local' or 'remote', got {cfg.backend!r}")
    return Sandbox(workers=cfg.workers, timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb,
                   max_output_bytes=cfg.max_output_bytes, isolation=cfg.isolation,
                   max_concurrency=cfg.max_concurrency or None, cpu_cores=cfg.cpu_cores,
                   quotas=cfg.quotas, preimport=cfg.preimport)
