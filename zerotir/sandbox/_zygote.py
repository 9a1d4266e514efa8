"""The warm worker ("zygote") and the per-execution kernels. This file runs INSIDE the sandbox.

It is executed as `python -I -B -c '"zerotir sandbox zygote";<bootstrap>' FD` (in isolation 'full' by the stage-1
script of isolation.py, inside bubblewrap, from the interpreter's neutral path): the bootstrap (`isolation.BOOT`) reads the config JSON line into sys.argv[1] and this source from the inherited memfd FD,
closes it and runs the source as __main__, so the command line stays short and no project file is visible inside.
It imports only the standard library, pyseccomp and the math stack it pre-imports; it never imports zerotir. The parent talks to it
over a SOCK_SEQPACKET unix socket (one JSON message per packet, file descriptors attached with SCM_RIGHTS).

Process tree (isolation 'full'):

    zygote Z (root inside bwrap, caps: SETUID/SETGID/SYS_ADMIN/KILL; never runs model code; child subreaper)
      └─ context init A  (pid 1 of a fresh pid+mount+ipc namespace; fresh tmpfs /tmp, /dev/shm and /proc;
         │                then drops to its own uid, no_new_privs, non-dumpable, rlimits, seccomp; with quotas,
         │                joins its cgroup through files the pool passes it (quotas.py) before anything else runs)
         └─ kernel L (forked while the context is warmed; a stateless call runs right in it)
              └─ cell W   (sessions: a fork of the kernel per cell; if the cell finishes, W becomes the kernel and L
                           retires; if W dies (timeout, crash), L is the rollback)

Killing A (the parent holds a pidfd) tears the whole namespace down: nothing outlives its context.

Length: over 400 lines on purpose. This is the one source the sandbox runs, read from a memfd (no project file is
visible inside, and it must not import zerotir); splitting it would mean concatenating sources at boot, and the
zygote's own tracebacks would then name the wrong file and line. The pool side is split by role (see pool.py).
"""

import array
import ctypes
import io
import json
import os
import select
import signal
import socket
import sys
import time

CFG = json.loads(sys.argv[1])
if CFG.get("sys_path"):  # full isolation: the host's entries at their neutral paths (see isolation.py)
    sys.path[:] = CFG["sys_path"]
FULL = CFG["isolation"] == "full"
LIMITS = CFG["isolation"] in ("full", "rlimits")

# Numerical libraries must not start thread pools in the zygote: forking a threaded process is unsafe.
for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_k] = "1"

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID = 0x00020000, 0x08000000, 0x20000000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
MAX_PACKET = 1 << 20


def _check(ret, what):
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def prctl(option, arg):
    _check(_libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)),
           f"prctl({option})")


def mount(src, target, fstype, flags, data=None):
    _check(_libc.mount(src.encode() if src else None, target.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), data.encode() if data else None), f"mount {target}")


def unshare(flags):
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


# ------------------------------------------------------------------------------------------------ messaging


def send(sock, obj, fds=()):
    data = json.dumps(obj).encode()
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(data)


def recv(sock):
    """(message dict or None at EOF, list of received fds)."""
    fds = array.array("i")
    data, anc, _flags, _addr = sock.recvmsg(MAX_PACKET, socket.CMSG_SPACE(16 * fds.itemsize))
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), list(fds)


# ------------------------------------------------------------------------------------------------ warm state


def preimport():
    """Import (and exercise once) the math stack so that a forked cell finds it warm."""
    import collections  # noqa: F401
    import decimal  # noqa: F401
    import fractions  # noqa: F401
    import functools  # noqa: F401
    import itertools  # noqa: F401
    import math  # noqa: F401
    import random  # noqa: F401
    import re  # noqa: F401
    import statistics  # noqa: F401
    import traceback  # noqa: F401

    for name in CFG.get("preimport", []):
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - a missing optional library just isn't pre-imported
            pass
    if "sympy" not in CFG.get("preimport", []):
        return
    try:
        import sympy

        x = sympy.Symbol("x")
        sympy.factorint(2**64 - 1)
        sympy.expand((x + 1) ** 3)
        sympy.Rational(1, 3) + sympy.sqrt(2)
    except Exception:  # noqa: BLE001
        pass


SECCOMP_BPF = None


def build_seccomp():
    """Compile the seccomp filter once in the zygote; contexts load the exported BPF (fast, no libseccomp)."""
    import errno
    import tempfile

    import pyseccomp as sc

    f = sc.SyscallFilter(defaction=sc.ALLOW)
    deny = ["ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root", "chroot",
            "unshare", "setns", "bpf", "perf_event_open", "kexec_load", "kexec_file_load", "init_module",
            "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct", "add_key", "request_key",
            "keyctl", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "open_by_handle_at",
            "name_to_handle_at", "fanotify_init", "mknod", "mknodat", "quotactl", "syslog", "personality",
            "settimeofday", "clock_settime", "adjtimex", "sethostname", "setdomainname", "vhangup",
            "lookup_dcookie", "move_mount", "open_tree", "fsopen", "fsmount", "fspick", "mount_setattr",
            "pidfd_getfd", "kcmp", "iopl", "ioperm", "uselib", "nfsservctl"]
    for name in deny:
        try:
            f.add_rule(sc.ERRNO(errno.EPERM), name)
        except Exception:  # noqa: BLE001 - syscall unknown on this architecture
            pass
    # New namespaces via clone flags; clone3 cannot be inspected, so it reports ENOSYS and libc falls back to clone.
    for flag in NS_FLAG_LIST:
        f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    # Sockets other than unix ones (AF_UNIX = 1): the network namespace already has no route out.
    f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.NE, 1))
    with tempfile.TemporaryFile() as tmp:
        f.export_bpf(tmp)
        tmp.seek(0)
        return tmp.read()


NS_FLAG_LIST = [0x10000000, 0x20000000, 0x08000000, 0x04000000, 0x40000000, 0x00020000, 0x02000000,
                0x00000080]  # NEWUSER, NEWPID, NEWIPC, NEWUTS, NEWNET, NEWNS, NEWCGROUP, NEWTIME


def load_seccomp(bpf):
    """prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &sock_fprog) with a pre-compiled program."""

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = SockFprog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _check(_libc.prctl(22, ctypes.c_ulong(2), ctypes.byref(prog), ctypes.c_ulong(0), ctypes.c_ulong(0)),
           "seccomp")


# ------------------------------------------------------------------------------------------------ contexts


def _vm_size_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def setup_context(uid, workdir):
    """In context init A (still root in full mode): private mounts, then drop every privilege for good."""
    import resource

    if FULL:
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        tmp_opts = f"size={int(CFG['tmpfs_mb'])}m,mode=1777,nr_inodes=4096"
        mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, tmp_opts)
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, tmp_opts)
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    if uid:
        if workdir:
            os.chown(workdir, uid, uid)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    if LIMITS:
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        mem = _vm_size_bytes() + int(CFG["memory_mb"]) * 1024 * 1024
        cpu = max(int(CFG["timeout_s"]), 600) + 2  # hard cap; each cell lowers its soft limit to its own timeout
        for res, val in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu),
                         (resource.RLIMIT_FSIZE, int(CFG["fsize_mb"]) * 1024 * 1024),
                         (resource.RLIMIT_NOFILE, 256), (resource.RLIMIT_CORE, 0)):
            resource.setrlimit(res, (val, val))
        if uid:  # RLIMIT_NPROC counts per uid; meaningless (and harmful to the zygote) for a shared uid
            resource.setrlimit(resource.RLIMIT_NPROC, (int(CFG["nproc"]), int(CFG["nproc"])))
    if FULL:
        prctl(PR_SET_DUMPABLE, 0)
        load_seccomp(SECCOMP_BPF)
    else:  # no pid namespace to tear down: at least the context init dies with its zygote
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.chdir(workdir or "/tmp")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir or "/tmp", "TMPDIR": workdir or "/tmp",
           "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
    env.update({k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    env.update({k: v for k, v in CFG.get("env", {}).items() if v})  # neutral PATH/PYTHONPATH/LD_LIBRARY_PATH
    os.environ.clear()
    os.environ.update(env)


def _format_exit(exc):
    """Exit code for SystemExit(arg), as the interpreter would compute it."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF if code >= 0 else code
    try:
        sys.stderr.write(f"{code}\n")
    except Exception:  # noqa: BLE001
        pass
    return 1


def run_cell(sock, ns, msg, out_fd, err_fd, ok_fd):
    """In cell process W: run the code with fds 1/2 on the parent's pipes; report 'done'. Returns if W survives."""
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    os.close(out_fd)
    os.close(err_fd)
    # Unbuffered text streams: output written before a kill is already in the pipe (partial output is kept).
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                                  write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                                  write_through=True)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.argv = ["<cell>"]
    if LIMITS and msg.get("timeout_s"):  # CPU-time backstop behind the parent's wall clock (fork reset the count)
        import resource

        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        soft = int(msg["timeout_s"]) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (soft if hard < 0 else min(soft, hard), hard))
    exit_code, oom = 0, False
    try:
        code = compile(msg["code"], "<cell>", "exec")
        exec(code, ns)
    except SystemExit as e:
        exit_code = _format_exit(e)
    except BaseException as e:  # noqa: BLE001 - the model's code may raise anything
        exit_code, oom = 1, isinstance(e, MemoryError)
        try:
            import traceback

            tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
            sys.stderr.write("".join(traceback.format_exception(type(e), e, tb)))
        except BaseException:  # noqa: BLE001
            try:
                os.write(2, f"{type(e).__name__}\n".encode())
            except OSError:
                pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            pass
    try:
        send(sock, {"op": "done", "cell": msg["cell"], "exit_code": exit_code, "oom": oom})
    except OSError:
        os._exit(exit_code or 0)
    if msg.get("last"):
        os._exit(0)
    # Detach from the pipes so the parent sees EOF; the session lives on in this process.
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    if ok_fd is not None:
        try:
            os.write(ok_fd, b"1")
            os.close(ok_fd)
        except OSError:
            pass


def kernel_loop(sock):
    """Kernel L: serve 'run', 'fork' and 'close' for one session (or one stateless call) until the parent hangs up.

    A stateless call ('last') runs right here: nothing needs to survive it, and the fork is already paid for (the
    kernel was forked when the context was warmed). A session cell runs in a fork W of the kernel: if it finishes,
    W becomes the kernel and this process retires; if W dies (timeout, crash), this process is the rollback.
    """
    import builtins
    import types

    # The code runs as a real __main__ module (pickling functions it defines works; multiprocessing works).
    main_mod = types.ModuleType("__main__")
    main_mod.__builtins__ = builtins
    sys.modules["__main__"] = main_mod
    ns = main_mod.__dict__
    while True:
        try:
            msg, fds = recv(sock)
        except OSError:
            msg, fds = None, []
        if msg is None or msg.get("op") == "close":
            os._exit(0)
        op = msg.get("op")
        if op == "fork":
            pid = os.fork()
            if pid == 0:
                sock.close()
                sock = socket.socket(fileno=fds[0])
                send(sock, {"op": "forked", "cell": msg["cell"]})
                continue
            os.close(fds[0])
            continue
        if op != "run" or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            continue
        if msg.get("last"):
            run_cell(sock, ns, msg, fds[0], fds[1], None)  # exits
            os._exit(0)
        rd, wr = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(rd)
            run_cell(sock, ns, msg, fds[0], fds[1], wr)
            continue  # this process is now the kernel; its parent retires
        os.close(wr)
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        try:
            send(sock, {"op": "started", "cell": msg["cell"]}, [pidfd])
        except OSError:
            pass
        succeeded = False
        while True:
            ready, _, _ = select.select([rd, pidfd], [], [])
            if rd in ready and os.read(rd, 1) == b"1":
                succeeded = True
                break
            if pidfd in ready:
                break
        os.close(rd)
        if succeeded:
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        os.close(pidfd)
        try:
            send(sock, {"op": "exit", "cell": msg["cell"], "status": status})
        except OSError:
            os._exit(0)


def init_loop(sock, kernel_pid):
    """Context init A (pid 1): reap every process of the namespace; report how the first kernel ended (that is how
    a stateless call that crashed or called os._exit is reported); leave when no process is left."""
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == kernel_pid:
            try:
                send(sock, {"op": "kernel_exit", "status": status})
            except OSError:
                pass
            sock.close()


def context_main(sock, uid, workdir):
    try:
        setup_context(uid, workdir)
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        # Only the context socket survives: the model's code must not inherit the zygote's descriptors.
        os.closerange(3, sock.fileno())
        os.closerange(sock.fileno() + 1, 65536)
        if CFG.get("quotas"):  # join the context's cgroup (files opened by the pool) before any code can run
            msg, fds = recv(sock)
            if not msg or msg.get("op") != "cgroup" or not fds:
                os._exit(0)
            for fd in fds:
                os.write(fd, b"0")
                os.close(fd)
        kernel = os.fork()
    except BaseException as e:  # noqa: BLE001
        try:
            send(sock, {"op": "fatal", "error": f"{type(e).__name__}: {e}"})
        finally:
            os._exit(70)
    if kernel == 0:
        kernel_loop(sock)
        os._exit(0)
    init_loop(sock, kernel)


# ------------------------------------------------------------------------------------------------ zygote


class Zygote:
    def __init__(self, ctrl):
        self.ctrl = ctrl
        self.live = {}  # context init pid -> workdir (rlimits/none modes) or None
        self.counter = 0
        self.own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY) if FULL else -1

    def next_uid(self):
        if not CFG.get("uid_base"):
            return 0
        self.counter = (self.counter + 1) % int(CFG["uid_span"])
        return int(CFG["uid_base"]) + self.counter

    def spawn(self, msg):
        uid = self.next_uid()
        workdir = None
        if not FULL:
            import tempfile

            workdir = tempfile.mkdtemp(prefix="zerotir-ctx-", dir=CFG.get("tmp_root") or None)
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # The next child is pid 1 of a fresh pid namespace; switching pid_for_children back right after the fork
        # lets the zygote do this again for the next context without an intermediate process.
        if FULL:
            unshare(CLONE_NEWPID)
        try:
            a = os.fork()
        except OSError:
            a = -1
        if a == 0:  # context init A
            try:
                self.ctrl.close()
                parent_end.close()
                if FULL:
                    unshare(CLONE_NEWNS | CLONE_NEWIPC)
                else:
                    os.setsid()
                context_main(child_end, uid, workdir)
            finally:
                os._exit(70)
        if FULL:
            _check(_libc.setns(ctypes.c_int(self.own_pidns), ctypes.c_int(CLONE_NEWPID)), "setns")
        child_end.close()
        if a < 0:
            parent_end.close()
            send(self.ctrl, {"op": "context", "id": msg["id"], "error": "could not fork the context process"})
            return
        pidfd = os.pidfd_open(a)
        self.live[a] = workdir
        try:
            send(self.ctrl, {"op": "context", "id": msg["id"], "pid": a, "uid": uid},
                 [parent_end.fileno(), pidfd])
        finally:
            parent_end.close()
            os.close(pidfd)

    def reap(self):
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.live:
                workdir = self.live.pop(pid)
                if not FULL:
                    self.cleanup(pid, workdir)
            elif not FULL:
                pass

    def cleanup(self, pid, workdir):
        """Weak modes only (no pid namespace): kill the context's process group and orphans, remove its dir."""
        import shutil

        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        self.kill_orphans()
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    def kill_orphans(self):
        me = os.getpid()
        try:
            kids = open(f"/proc/{me}/task/{me}/children").read().split()
        except OSError:
            return
        for k in map(int, kids):
            if k not in self.live:
                try:
                    os.kill(k, signal.SIGKILL)
                except OSError:
                    pass

    def serve(self):
        last_sweep = time.monotonic()
        while True:
            ready, _, _ = select.select([self.ctrl], [], [], 0.1)
            if ready:
                try:
                    msg, fds = recv(self.ctrl)
                except OSError:
                    msg, fds = None, []
                for fd in fds:
                    os.close(fd)
                if msg is None or msg.get("op") == "shutdown":
                    self.shutdown()
                op = msg.get("op")
                if op == "spawn":
                    try:
                        self.spawn(msg)
                    except Exception as e:  # noqa: BLE001
                        send(self.ctrl, {"op": "context", "id": msg.get("id"), "error": f"{type(e).__name__}: {e}"})
                elif op == "ping":
                    send(self.ctrl, {"op": "pong", "id": msg.get("id")})
            self.reap()
            if not FULL and time.monotonic() - last_sweep > 1.0:
                last_sweep = time.monotonic()
                self.kill_orphans()

    def shutdown(self):
        for pid, workdir in list(self.live.items()):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            if not FULL:
                self.cleanup(pid, workdir)
        os._exit(0)


def probe():
    """Facts the parent checks before trusting 'full' isolation."""
    facts = {"uid": os.getuid(), "pid": os.getpid(), "overlay": os.environ.get("ZEROTIR_OVERLAY") == "1"}
    try:
        facts["net"] = sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else None
    except OSError:
        facts["net"] = None
    try:
        facts["ifaces"] = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
    except OSError:
        facts["ifaces"] = None
    return facts


def main():
    global SECCOMP_BPF
    ctrl = socket.socket(fileno=int(CFG["ctrl_fd"]))
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        preimport()
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        if FULL:
            SECCOMP_BPF = build_seccomp()
    except BaseException as e:  # noqa: BLE001
        send(ctrl, {"op": "fatal", "error": f"{type(e).__name__}: {e}"})
        os._exit(70)
    send(ctrl, {"op": "ready", "probe": probe()})
    Zygote(ctrl).serve()


if __name__ == "__main__":
    main()
