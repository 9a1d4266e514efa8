"""Per-call quotas on a whole process tree: one cgroup per context, released with it.

Every context (its init, its kernel, and everything the code forks) lives in its own cgroup with a memory limit
(`memory_mb` for the whole call: the RSS its processes add to the warm interpreter, plus the page cache of its
tmpfs), a pids limit (tasks, threads included) and a CPU quota (`cpu_cores` of CFS bandwidth). A memory bomb spread
over many children therefore meets one limit, and the kernel's OOM killer acts inside that cgroup only: the call
ends `oom`, nothing else on the machine is touched.

Both layouts are supported: cgroup v2 (one directory per context: memory.max, pids.max, cpu.max) and v1 (one
directory per controller hierarchy: memory.limit_in_bytes, pids.max, cpu.cfs_quota_us). `Quotas.create` tries v2
and then v1 at start and raises `SandboxUnavailable` naming what is missing in each.

Who moves the process: the context's init moves itself, before it forks the kernel, by writing "0" to files the
pool (outside bubblewrap, where /sys/fs/cgroup is) opened as root and passed over its socket; it closes them
before any code runs, so no code of the model ever runs outside its cgroup or holds a cgroup file. Moving oneself
(v1 `tasks`) avoids the global lock a move of another process takes, which waits for an RCU grace period and
stalls every fork on the machine meanwhile. Contexts are pre-warmed, so this costs the call itself nothing;
removing the group waits for the context's init to exit (its pidfd becomes readable; the pid namespace is empty by
then) and retries briefly while the kernel finishes the teardown.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets

from zerotir.sandbox.errors import SandboxUnavailable

log = logging.getLogger("zerotir.sandbox")

CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000
# Files written when present; their absence (no swap accounting) is not an error.
OPTIONAL = {"memory.swap.max", "memory.memsw.limit_in_bytes"}


def cpu_quota_us(cpu_cores: float, period_us: int = CPU_PERIOD_US) -> int:
    """CFS quota per period for `cpu_cores` cores (1.5 cores, 100 ms period -> 150000 us); at least 1 ms."""
    if cpu_cores <= 0:
        raise ValueError(f"cpu_cores must be > 0, got {cpu_cores}")
    return max(1000, round(cpu_cores * period_us))


def limit_writes(kind: str, memory_mb: int, pids: int, cpu_cores: float) -> dict[str, list[tuple[str, str]]]:
    """{hierarchy: [(file, value), ...]} in the order they must be written (v1: memsw after the memory limit)."""
    mem, quota = str(int(memory_mb) * 1024 * 1024), cpu_quota_us(cpu_cores)
    if kind == "v2":
        return {"v2": [("memory.max", mem), ("memory.swap.max", "0"), ("pids.max", str(pids)),
                       ("cpu.max", f"{quota} {CPU_PERIOD_US}")]}
    return {"memory": [("memory.limit_in_bytes", mem), ("memory.memsw.limit_in_bytes", mem)],
            "pids": [("pids.max", str(pids))],
            "cpu": [("cpu.cfs_period_us", str(CPU_PERIOD_US)), ("cpu.cfs_quota_us", str(quota))]}


def parse_cgroup_mounts(mountinfo: str) -> dict[str, tuple[str, str]]:
    """{'v2' | controller: (mount point, root of the mount)} from /proc/self/mountinfo (first mount of each)."""
    out: dict[str, tuple[str, str]] = {}
    for line in mountinfo.splitlines():
        pre, _, post = line.partition(" - ")
        f, g = pre.split(), post.split()
        if len(f) < 5 or len(g) < 3:
            continue
        if g[0] == "cgroup2":
            out.setdefault("v2", (f[4], f[3]))
        elif g[0] == "cgroup":
            opts = g[2].split(",")
            for c in CONTROLLERS:
                if c in opts:
                    out.setdefault(c, (f[4], f[3]))
    return out


def parse_own_cgroups(text: str) -> dict[str, str]:
    """{'v2' | controller: path} from /proc/self/cgroup ('0::/a/b' is the unified hierarchy)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            out["v2"] = parts[2]
        for c in parts[1].split(","):
            if c in CONTROLLERS:
                out[c] = parts[2]
    return out


def cgroup_dir(mount: str, root: str, own: str) -> str:
    """Where this process's cgroup `own` is under a hierarchy mounted at `mount` whose root is `root`."""
    if root != "/" and (own == root or own.startswith(root + "/")):
        own = own[len(root):]
    return os.path.join(mount, own.lstrip("/"))


def oom_kill_count(text: str) -> int:
    """The `oom_kill` counter of memory.events (v2) or memory.oom_control (v1)."""
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if k == "oom_kill":
            return int(v)
    return 0


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


class Group:
    """One context's cgroup (one directory per hierarchy)."""

    def __init__(self, dirs: dict[str, str], oom_file: str):
        self.dirs, self.oom_file = dirs, oom_file

    def join_fds(self) -> list[int]:
        """Files the context's init writes "0" to, to move itself in: v1 `tasks` (one thread: no global lock),
        v2 `cgroup.procs`. Opened here, as root: the kernel checks the opener's credentials."""
        name = "cgroup.procs" if "v2" in self.dirs else "tasks"
        fds: list[int] = []
        try:
            for d in self.dirs.values():
                fds.append(os.open(os.path.join(d, name), os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def oom_kills(self) -> int:
        try:
            with open(self.oom_file) as f:
                return oom_kill_count(f.read())
        except OSError:
            return 0

    def remove(self) -> bool:
        """rmdir every directory; False while some are still busy (processes not yet gone)."""
        done = True
        for key, d in list(self.dirs.items()):
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno != errno.EBUSY:
                    log.warning("sandbox: cannot remove cgroup %s: %s", d, e)
                done = False
                continue
            del self.dirs[key]
        return done


class Quotas:
    """The pool's parent cgroup(s), and a fresh child group with the call's limits for each context."""

    def __init__(self, kind: str, parents: dict[str, str], writes: dict[str, list[tuple[str, str]]]):
        self.kind, self.parents, self.writes = kind, parents, writes
        self.counter = 0
        self.pending: dict[int, Group] = {}  # pidfd -> group waiting for its processes to go
        self.loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def create(cls, memory_mb: int, pids: int, cpu_cores: float, weight_tasks: int = 1) -> "Quotas":
        """Detect a writable cgroup layout (v2, then v1) and make the pool's parent group(s) in it.

        The parent's CPU weight is that of `weight_tasks` processes: a cgroup competes with its siblings as one
        task, so without it the whole pool would get one process's share next to a busy trainer's threads."""
        try:
            mounts = parse_cgroup_mounts(open("/proc/self/mountinfo").read())
            own = parse_own_cgroups(open("/proc/self/cgroup").read())
        except OSError as e:
            raise SandboxUnavailable(f"per-call quotas need cgroups: cannot read /proc/self ({e})") from None
        name = f"zerotir-{os.getpid()}-{secrets.token_hex(3)}"
        reasons = []
        for kind, keys in (("v2", ("v2",)), ("v1", CONTROLLERS)):
            missing = [k for k in keys if k not in mounts or k not in own]
            if missing:
                reasons.append(f"cgroup {kind}: no {'/'.join(missing)} hierarchy mounted")
                continue
            bases = {k: cgroup_dir(*mounts[k], own[k]) for k in keys}
            try:
                if kind == "v2":
                    bases["v2"] = _v2_base(bases["v2"], own["v2"])
                parents = {k: os.path.join(b, name) for k, b in bases.items()}
                made = []
                try:
                    for p in parents.values():
                        _sweep_stale(os.path.dirname(p))
                        os.mkdir(p)
                        made.append(p)
                    if kind == "v2":
                        _write(os.path.join(parents["v2"], "cgroup.subtree_control"), "+memory +pids +cpu")
                        _write(os.path.join(parents["v2"], "cpu.weight"), str(min(10_000, 100 * weight_tasks)))
                    else:
                        _write(os.path.join(parents["cpu"], "cpu.shares"), str(1024 * weight_tasks))
                except OSError:
                    for p in reversed(made):
                        os.rmdir(p)
                    raise
            except OSError as e:
                reasons.append(f"cgroup {kind}: {e.strerror or e} ({e.filename or bases})")
                continue
            return cls(kind, parents, limit_writes(kind, memory_mb, pids, cpu_cores))
        raise SandboxUnavailable("isolation='full' needs per-call quotas (cgroups with memory, pids and cpu "
                                 "controllers, writable by this process): " + "; ".join(reasons) +
                                 ". Run as root where cgroups are writable, or pass quotas=False (each process is "
                                 "then limited, not the call)")

    def new_group(self) -> Group:
        """A child group with the limits written (not yet holding a process)."""
        self.counter += 1
        dirs = {k: os.path.join(p, f"c{self.counter}") for k, p in self.parents.items()}
        group = Group({}, os.path.join(dirs["v2" if self.kind == "v2" else "memory"],
                                       "memory.events" if self.kind == "v2" else "memory.oom_control"))
        try:
            for k, d in dirs.items():
                os.mkdir(d)
                group.dirs[k] = d
                for fname, value in self.writes[k]:
                    try:
                        _write(os.path.join(d, fname), value)
                    except (FileNotFoundError, PermissionError):
                        if fname not in OPTIONAL:
                            raise
        except OSError:
            group.remove()
            raise
        return group

    def release(self, group: Group, pidfd: int, loop: asyncio.AbstractEventLoop) -> None:
        """Remove `group` once the process behind `pidfd` (the context's init, already killed) has exited; owns
        the pidfd from now on."""
        self.loop = loop
        self.pending[pidfd] = group
        try:
            loop.add_reader(pidfd, self._exited, pidfd, 0)
        except (ValueError, OSError, RuntimeError):  # loop closing: try now, close() sweeps the rest
            self._exited(pidfd, 0, reader=False)

    def _exited(self, pidfd: int, attempt: int, reader: bool = True) -> None:
        if reader and self.loop is not None:
            self.loop.remove_reader(pidfd)
        group = self.pending.get(pidfd)
        if group is None:
            return
        if group.remove() or attempt >= 40:
            if group.dirs:
                log.warning("sandbox: cgroup %s still busy; left behind", list(group.dirs.values()))
            del self.pending[pidfd]
            os.close(pidfd)
            return
        if self.loop is not None and not self.loop.is_closed():  # the kernel is still tearing the tree down
            self.loop.call_later(min(0.01 * 2 ** min(attempt, 5), 0.25), self._exited, pidfd, attempt + 1, False)

    def close(self) -> None:
        """Remove every group and the parents (after the workers were killed)."""
        for pidfd, group in list(self.pending.items()):
            if self.loop is not None:
                try:
                    self.loop.remove_reader(pidfd)
                except (ValueError, OSError, RuntimeError):
                    pass
            for _ in range(50):
                if group.remove():
                    break
                _sleep(0.02)
            os.close(pidfd)
        self.pending.clear()
        for p in self.parents.values():
            for _ in range(50):
                try:
                    _remove_tree(p)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    _sleep(0.02)


def _sleep(s: float) -> None:
    import time

    time.sleep(s)


def _remove_tree(path: str) -> None:
    for child in os.listdir(path):
        if os.path.isdir(os.path.join(path, child)):
            os.rmdir(os.path.join(path, child))
    os.rmdir(path)


def _v2_base(own_dir: str, own: str) -> str:
    """Where the pool's v2 group goes. A v2 cgroup holding processes cannot give its children controllers, so the
    group is made next to this process's own cgroup (whose parent already delegates the controllers it lists), or
    under the root cgroup, which is exempt, when this process is there."""
    if own == "/":
        sub = set(open(os.path.join(own_dir, "cgroup.subtree_control")).read().split())
        if not set(CONTROLLERS) <= sub:
            _write(os.path.join(own_dir, "cgroup.subtree_control"), " ".join(f"+{c}" for c in CONTROLLERS))
        return own_dir
    have = set(open(os.path.join(own_dir, "cgroup.controllers")).read().split())
    missing = [c for c in CONTROLLERS if c not in have]
    if missing:
        raise OSError(errno.ENOTSUP, f"controllers {'/'.join(missing)} are not delegated to this cgroup", own_dir)
    return os.path.dirname(own_dir.rstrip("/"))


def _sweep_stale(base: str) -> None:
    """Remove empty groups left by pools whose process is gone (a SIGKILLed trainer never ran close())."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for n in names:
        parts = n.split("-")
        if len(parts) == 3 and parts[0] == "zerotir" and parts[1].isdigit() and not os.path.exists(f"/proc/{parts[1]}"):
            try:
                _remove_tree(os.path.join(base, n))
            except OSError:
                pass
