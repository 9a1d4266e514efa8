"""Isolation setup: the layers `isolation='full'` needs (checked at start), the bubblewrap command line, and the
neutral view of the interpreter the code gets.

Neutral paths. The interpreter's prefixes (base prefix, venv, any other) are shown under /opt/zerotir-python/pN, so
nothing the code can look at names the host's layout (a checkout under /work, a pyenv under /root):
  * bubblewrap binds each prefix at a staging path /opt/zerotir-python/.stage/pN;
  * a stage-1 interpreter (`STAGE1`) mounts a read-only overlayfs at /opt/zerotir-python/pN whose lower layer is
    that staging path, detaches the staging binds, and re-executes the interpreter from the neutral path. A bind
    mount would not do: /proc/self/mountinfo prints a bind's source path within its filesystem (the host path),
    while an overlay's root is its own and its options name only the (gone) staging path;
  * the zygote runs the *base* interpreter (the venv's own would read pyvenv.cfg, which names the host prefix) with
    `sys.path` set to the host's entries mapped to the neutral prefixes (entries outside them, such as an editable
    checkout, are dropped); of a venv only its package directories are shown (not pyvenv.cfg or scripts, which name
    the checkout), and files there that name host paths (.pth, editable finders, direct_url.json) read as empty;
    contexts get PATH, PYTHONPATH and LD_LIBRARY_PATH (pyenv links libpython by an absolute RUNPATH) pointing at
    the same neutral paths, so a subprocess `python3` imports what the cell imports.
Where overlayfs cannot be mounted the stage binds the prefix instead (paths stay neutral, mountinfo's root field
does not) and the worker reports it; the pool logs a warning.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from zerotir.sandbox.errors import SandboxUnavailable

ISOLATION_LEVELS = ("full", "rlimits", "none")
NEUTRAL_ROOT = "/opt/zerotir-python"
STAGE_ROOT = f"{NEUTRAL_ROOT}/.stage"
# The worker's command line ends in a bootstrap that reads the config line and the zygote's source from an inherited
# memfd (argv[1]) and closes it: `ps` shows a name instead of 600 lines of source, and no project file is visible
# inside (running _zygote.py by path would need the tree bound inside).
BOOT = ('"zerotir sandbox zygote";import os,sys;f=os.fdopen(int(sys.argv[1]),"rb");sys.argv[1:]=[f.readline()'
        '.decode()];c=compile(f.read(),"zerotir/sandbox/_zygote.py","exec");f.close();del f;exec(c)')
# Stage 1 (full isolation only): overlay each staged prefix at its neutral path, drop the staging binds, re-exec.
STAGE1 = r'''"zerotir sandbox stage1"
import ctypes, json, os, sys
fd = int(sys.argv[1]); cfg = json.loads(os.pread(fd, 1 << 20, 0).split(b"\n", 1)[0])
libc = ctypes.CDLL(None, use_errno=True)
def mnt(src, dst, fs, flags, data):
    if libc.mount(src.encode(), dst.encode(), fs.encode() if fs else None, ctypes.c_ulong(flags),
                  data.encode() if data else None):
        raise OSError(ctypes.get_errno(), "mount " + dst)
overlay = True
stages = [s for s, _ in cfg["layout"]]
empty = os.path.dirname(stages[0]) + "/.empty" if stages else ""
if empty:  # the second layer overlayfs needs: a tmpfs of its own, so its path can go and the layer stays
    mnt("tmpfs", empty, "tmpfs", 1, "size=4k,mode=755")
for stage, final in cfg["layout"]:
    try:
        mnt("overlay", final, "overlay", 1, "lowerdir=%s:%s/.empty" % (stage, os.path.dirname(stage)))
    except OSError:
        overlay = False
        mnt(stage, final, None, 4096 | 16384, None)
        mnt("none", final, None, 4096 | 32 | 1, None)
for d in stages + ([empty] if empty else []):
    libc.umount2(d.encode(), 2)
for d in stages + [empty, os.path.dirname(empty)] if stages else []:
    try: os.rmdir(d)
    except OSError: pass
for path in cfg["mask"]:
    try:
        mnt("/dev/null", path, None, 4096, None)
        mnt("none", path, None, 4096 | 32 | 1, None)
    except OSError: pass
os.environ["LD_LIBRARY_PATH"] = cfg["ld_library_path"]
os.environ["ZEROTIR_OVERLAY"] = "1" if overlay else "0"
os.execv(cfg["python"], [cfg["python"], "-I", "-B", "-c", cfg["boot"], str(fd)])
'''


@dataclass(frozen=True)
class PythonLayout:
    """Where the interpreter appears inside the sandbox."""

    binds: tuple[tuple[str, str], ...]  # (host prefix, neutral path)
    python: str  # the base interpreter at its neutral path (the host path where no prefix needed moving)
    sys_path: tuple[str, ...]  # the zygote's sys.path
    site_path: tuple[str, ...]  # entries beyond the base interpreter's own (the venv's site-packages): PYTHONPATH
    lib_path: str  # LD_LIBRARY_PATH

    def neutral(self, path: str) -> str | None:
        """`path` as the sandbox sees it; None if it is not visible there."""
        for host, target in self.binds:
            if path == host or path.startswith(host + "/"):
                return target + path[len(host):]
        return path if _system_path(path) else None


def _system_path(path: str) -> bool:
    return path == "/usr" or path.startswith("/usr/")


def python_layout(prefixes: list[str], executable: str, sys_path: list[str]) -> PythonLayout:
    """Pure: neutral paths for the base interpreter (the resolved prefix holding `executable`, shown whole at p0) and
    for each host `sys_path` entry inside another prefix (a venv: only its package directories are shown, at p1...,
    not its pyvenv.cfg or scripts, which name the checkout). Entries outside every prefix (an editable checkout)
    are dropped; anything under /usr is visible as it is."""
    def under(path: str, root: str) -> bool:
        return path == root or path.startswith(root + "/")

    holders = [p for p in prefixes if under(executable, p)]
    base = max(holders, key=len) if holders else None
    binds: list[tuple[str, str]] = []
    if base is not None and not _system_path(base):
        binds.append((base, f"{NEUTRAL_ROOT}/p0"))
    for entry in sys_path:
        if not entry.startswith("/") or _system_path(entry) or (base is not None and under(entry, base)):
            continue
        if any(under(entry, p) for p in prefixes) and not any(under(entry, h) for h, _ in binds):
            binds.append((entry, f"{NEUTRAL_ROOT}/p{len(binds) + (1 if not binds else 0)}"))
    lay = PythonLayout(tuple(binds), "", (), (), "")
    python = lay.neutral(executable)
    if python is None:
        raise SandboxUnavailable(f"the interpreter {executable} is outside its prefixes {prefixes}; the sandbox "
                                 "cannot show it at a neutral path")
    mapped = [m for m in (lay.neutral(p) for p in sys_path if p.startswith("/")) if m is not None]
    base_dir = str(Path(python).parent.parent)
    site = tuple(p for p in dict.fromkeys(mapped) if not under(p, base_dir))
    return PythonLayout(tuple(binds), python, tuple(dict.fromkeys(mapped)), site, f"{base_dir}/lib")


def revealing_files(site_dir: str) -> list[str]:
    """Files directly in a package directory whose text names host paths and that imports never need here (the
    zygote's sys.path is explicit): .pth and editable-install finders, and installers' direct_url.json records."""
    out = []
    try:
        names = os.listdir(site_dir)
    except OSError:
        return out
    for n in names:
        if n.endswith((".pth", ".egg-link")) or n.startswith("__editable__"):
            out.append(n)
        elif n.endswith(".dist-info") and os.path.exists(os.path.join(site_dir, n, "direct_url.json")):
            out.append(f"{n}/direct_url.json")
    return sorted(out)


def host_layout() -> PythonLayout:
    """The layout of the interpreter running this process (sys.path entries that exist)."""
    prefixes = [str(Path(p).resolve()) for p in {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}]
    base_exe = getattr(sys, "_base_executable", None) or sys.executable
    entries = [str(Path(p).resolve()) for p in sys.path if p and p.startswith("/") and os.path.exists(p)]
    return python_layout(prefixes, str(Path(base_exe).resolve()), entries)


def bwrap_command(layout: PythonLayout, payload_fd: int) -> list[str]:
    """bubblewrap: read-only system, no network, own pid/ipc/uts namespaces, no host secrets in the environment;
    the interpreter's prefixes staged for `STAGE1`, which then runs the zygote's bootstrap from the neutral path."""
    cmd = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc",
           "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox"]
    for d in ("/usr", "/etc"):
        cmd += ["--ro-bind", d, d]
    for link in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
        p = Path(link)
        if p.is_symlink():
            cmd += ["--symlink", os.readlink(link), link]
        elif p.is_dir():
            cmd += ["--ro-bind", link, link]
    # Directories are created world-traversable (bwrap's default 0700 would hide the interpreter from the
    # unprivileged uid); they hold nothing but the neutral prefixes.
    cmd += ["--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", NEUTRAL_ROOT,
            "--perms", "0755", "--dir", STAGE_ROOT, "--perms", "0755", "--dir", f"{STAGE_ROOT}/.empty"]
    stage_python = layout.python
    for i, (host, target) in enumerate(layout.binds):
        stage = f"{STAGE_ROOT}/p{i}"
        cmd += ["--perms", "0755", "--dir", target, "--ro-bind", host, stage]
        if layout.python.startswith(target + "/"):
            stage_python = stage + layout.python[len(target):]
    for secret in ("/etc/shadow", "/etc/gshadow", "/etc/sudoers"):
        if os.path.exists(secret):
            cmd += ["--ro-bind", "/dev/null", secret]
    stage_lib = layout.lib_path.replace(NEUTRAL_ROOT + "/", STAGE_ROOT + "/", 1)
    cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", "/dev/shm", "--chdir", "/tmp",
            "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
            "--setenv", "HOME", "/tmp", "--setenv", "MALLOC_ARENA_MAX", "2", "--setenv", "LD_LIBRARY_PATH", stage_lib]
    for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SYS_ADMIN", "CAP_KILL"):
        cmd += ["--cap-add", cap]
    return cmd + ["--", stage_python, "-I", "-S", "-B", "-c", STAGE1, str(payload_fd)]


def stage_config(layout: PythonLayout) -> dict:
    """The config keys `STAGE1` and the zygote read for the neutral layout."""
    mask = [f"{target}/{f}" for host, target in layout.binds if target != f"{NEUTRAL_ROOT}/p0"
            for f in revealing_files(host)]
    return {"layout": [[f"{STAGE_ROOT}/p{i}", target] for i, (_h, target) in enumerate(layout.binds)], "mask": mask,
            "python": layout.python, "boot": BOOT, "ld_library_path": layout.lib_path,
            "sys_path": list(layout.sys_path),
            "env": {"PATH": f"{Path(layout.python).parent}:/usr/local/bin:/usr/bin:/bin",
                    "PYTHONPATH": ":".join(layout.site_path), "LD_LIBRARY_PATH": layout.lib_path}}


def check_isolation(isolation: str) -> None:
    """Raise SandboxUnavailable naming the first missing layer of `isolation` (quotas are checked by the pool)."""
    if isolation not in ISOLATION_LEVELS:
        raise SandboxUnavailable(f"unknown isolation level {isolation!r}; choose one of {ISOLATION_LEVELS}")
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable("the sandbox needs Linux (fork server, pidfd); use another machine")
    if isolation != "full":
        return
    if shutil.which("bwrap") is None:
        raise SandboxUnavailable("isolation='full' needs bubblewrap: install it (`apt-get install bubblewrap` or "
                                 "`make system-deps`), or choose isolation='rlimits' (weaker)")
    if os.geteuid() != 0:
        raise SandboxUnavailable("isolation='full' needs root (to give each execution its own unprivileged uid and "
                                 "namespaces); run as root or choose isolation='rlimits' (weaker)")
    try:
        import pyseccomp  # noqa: F401
    except Exception as e:  # noqa: BLE001
        raise SandboxUnavailable(f"isolation='full' needs pyseccomp (and libseccomp): {e}; `pip install "
                                 "pyseccomp` or choose isolation='rlimits'") from None
