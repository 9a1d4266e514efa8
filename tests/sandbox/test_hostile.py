"""Hostile code: each snippet gets its expected safe outcome, and afterwards the pool is healthy and nothing leaked.

The pool runs with timeout 1 s, 256 MB, 4096-byte output cap (see conftest). 'infra' below means sandbox_error,
which hostile code must never be able to cause.
"""

import os
import socket
import threading

import pytest

from tests.sandbox.conftest import SECRET

pytestmark = pytest.mark.timeout(180)  # a hang becomes a failure with a traceback


def no_infra(r):
    return r.status != "sandbox_error"


def status(*allowed):
    return lambda r: r.status in allowed


def out_is(text):
    return lambda r: r.status == "ok" and r.stdout == text


HOSTILE = {
    # --- time ---
    "infinite_loop": ("while True: pass", status("timeout")),
    "sleep": ("import time; time.sleep(60)", status("timeout")),
    "ignore_signals": ("import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
                       "    signal.signal(s, signal.SIG_IGN)\nwhile True: pass", status("timeout")),
    "busy_in_c": ("import re; re.match(r'(a+)+$', 'a' * 64 + 'b')", status("timeout")),
    # --- memory ---
    "memory_bomb_str": ("x = ' ' * (10**10)", status("oom")),
    "memory_bomb_list": ("x = [0] * (10**9)", status("oom")),
    "numpy_bomb": ("import numpy as np; a = np.ones((10**5, 10**5))", status("oom")),
    "gradual_memory": ("a = []\nwhile True: a.append(bytearray(10**7))", status("oom", "timeout")),
    "sympy_huge_power": ("import sympy; print(len(str(sympy.Integer(10)**(10**12))))", status("oom", "timeout")),
    # --- output ---
    "stdout_flood": ("while True: print('x' * 1000)",
                     lambda r: r.status == "timeout" and r.truncated and len(r.stdout.encode()) <= 4096),
    "stderr_flood": ("import sys\nwhile True: sys.stderr.write('e' * 1000)",
                     lambda r: r.status == "timeout" and r.truncated and len(r.stderr.encode()) <= 4096 + 200),
    "one_huge_print": ("print('y' * 10**6)", lambda r: r.status == "ok" and r.truncated and r.stdout == "y" * 4096),
    "invalid_utf8": ("import os; os.write(1, b'\\xff\\xfe ok\\n')", lambda r: r.status == "ok" and "ok" in r.stdout
                     and "\ufffd" in r.stdout),
    "close_stdout": ("import os; os.close(1); os.close(2); x = 1", status("ok")),
    # --- disk ---
    "disk_fill_one_file": ("f = open('/tmp/big', 'wb')\nwhile True: f.write(b'z' * (1 << 20))", status("error")),
    "disk_fill_many_files": ("i = 0\nwhile True:\n    open(f'/tmp/f{i}', 'wb').write(b'z' * (1 << 20)); i += 1",
                             status("error")),
    "write_outside_tmp": ("import os\nbad = []\nfor p in ('/usr/x', '/etc/x', '/x', '/root/x', '/proc/x'):\n"
                          "    try: open(p, 'w'); bad.append(p)\n    except OSError: pass\nprint(bad)",
                          out_is("[]\n")),
    "poison_site_packages": ("import os, numpy; open(os.path.join(os.path.dirname(numpy.__file__), 'evil.py'), 'w')",
                             status("error")),
    # --- processes ---
    "fork_bomb": ("import os\nwhile True:\n    try: os.fork()\n    except OSError: break", no_infra),
    "thread_bomb": ("import threading, time\nfor _ in range(10000):\n"
                    "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()", status("error")),
    "daemonized_child": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                         "        time.sleep(60)\n    os._exit(0)\nprint('parent done')", out_is("parent done\n")),
    "orphan_writer": ("import os, time\nif os.fork() == 0:\n    while True: os.write(1, b'late\\n'); time.sleep(0.01)\n"
                      "print('bye')", lambda r: r.status == "ok" and r.stdout.startswith(("bye", "late"))),
    "kill_parent": ("import os; os.kill(os.getppid(), 9); print('still here')", out_is("still here\n")),
    "kill_minus_one": ("import os, signal\ntry: os.kill(-1, signal.SIGKILL)\nexcept OSError as e: print(e.errno)",
                       no_infra),
    "kill_pid_1": ("import os; os.kill(1, 9); print('ok')", out_is("ok\n")),
    "ctypes_segfault": ("import ctypes; ctypes.string_at(0)", lambda r: r.status == "killed" and r.signal == 11),
    "recursion": ("def f(n): return f(n + 1)\nf(0)", lambda r: r.status == "error" and "RecursionError" in r.stderr),
    "deep_c_recursion": ("import sys; sys.setrecursionlimit(10**7)\ndef f(n): return f(n + 1)\nf(0)",
                         status("killed", "timeout", "error", "oom")),  # frames live on the heap in 3.11+
    "raise_own_rlimits": ("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))", status("error")),
    "setuid_root": ("import os; os.setuid(0)", status("error")),
    # --- secrets ---
    "read_shadow": ("print(open('/etc/shadow').read())", lambda r: "root:" not in r.stdout and r.status != "ok"
                    or r.stdout.strip() == ""),
    "read_root_home": ("import os\nprint(sorted(os.listdir('/root')))", lambda r: r.status == "error"
                       or r.stdout in ("[]\n", "['.pyenv']\n")),
    "read_project_tree": ("import os\nprint(os.path.exists('/work/main/zerotir'), os.path.exists('" +
                          os.path.abspath(__file__) + "'))", out_is("False False\n")),
    "env_secrets": ("import os\nprint(any('" + SECRET + "' in v for v in os.environ.values()))", out_is("False\n")),
    "parent_env_via_proc": ("import os\nfound = False\nfor p in os.listdir('/proc'):\n    if p.isdigit():\n"
                            "        try: found |= b'" + SECRET + "' in open(f'/proc/{p}/environ', 'rb').read()\n"
                            "        except OSError: pass\nprint(found)", out_is("False\n")),
    "parent_memory": ("open('/proc/1/mem', 'rb').read(16)", status("error")),
    "see_host_processes": ("import os; print(len([p for p in os.listdir('/proc') if p.isdigit()]) <= 3)",
                           out_is("True\n")),
    # --- kernel surface ---
    "unshare_userns": ("import ctypes; libc = ctypes.CDLL(None, use_errno=True)\n"
                       "print(libc.unshare(0x10000000), ctypes.get_errno())", out_is("-1 1\n")),
    "ptrace_attach": ("import ctypes; libc = ctypes.CDLL(None, use_errno=True)\n"
                      "print(libc.ptrace(16, 1, 0, 0), ctypes.get_errno())", out_is("-1 1\n")),
    "mount_tmpfs": ("import ctypes; libc = ctypes.CDLL(None, use_errno=True)\n"
                    "print(libc.mount(b'x', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())", out_is("-1 1\n")),
    "chroot": ("import os; os.chroot('/tmp')", status("error")),
    # --- network ---
    "network_egress": ("import socket; socket.create_connection(('1.1.1.1', 80), timeout=1)", status("error")),
    "raw_dns": ("import socket; socket.getaddrinfo('example.com', 80)", status("error")),
    # --- interpreter ---
    "sys_exit_code": ("import sys; sys.exit(3)", lambda r: r.status == "error" and r.exit_code == 3),
    "sys_exit_zero": ("import sys; sys.exit(0)", lambda r: r.status == "ok" and r.exit_code == 0),
    "sys_exit_message": ("raise SystemExit('bye')", lambda r: r.status == "error" and "bye" in r.stderr),
    "os_exit": ("import os; os._exit(7)", lambda r: r.status == "error" and r.exit_code == 7),
    "input": ("input()", lambda r: r.status == "error" and "EOFError" in r.stderr),
    "keyboard_interrupt": ("raise KeyboardInterrupt", status("error")),
    "huge_code": ("x = 1\n" * 200_000, lambda r: r.status == "error" and "larger than" in r.stderr),
}


def test_suite_is_big_enough():
    assert len(HOSTILE) >= 30


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile(sb, leakcheck, name):
    code, expect = HOSTILE[name]
    r = sb.run(code)
    assert expect(r), f"{name}: unexpected outcome {r}"
    assert r.duration_s <= 1.0 + 0.1, f"{name}: ran {r.duration_s:.3f} s past the 1 s limit"
    # The pool is still correct afterwards (not just alive).
    ok = sb.run("print(6 * 7)")
    assert ok.status == "ok" and ok.stdout == "42\n", ok


def test_state_in_tmp_and_shm_does_not_carry_over(sb, leakcheck):
    r = sb.run("open('/tmp/marker', 'w').write('x'); open('/dev/shm/marker', 'w').write('x'); print('w')")
    assert r.stdout == "w\n"
    r = sb.run("import os; print(os.listdir('/tmp'), os.listdir('/dev/shm'))")
    assert r.stdout == "[] []\n", r


def test_monkeypatching_does_not_carry_over(sb, leakcheck):
    sb.run("import math, builtins; math.sqrt = lambda x: 42; builtins.print = None; import sys; sys.modules['os'] = 1")
    r = sb.run("import math, os; print(math.sqrt(16.0), type(os).__name__)")
    assert r.stdout == "4.0 module\n", r


def test_host_loopback_services_unreachable(sb, leakcheck):
    """A TCP service and an abstract unix socket on this host (like the sandbox server) cannot be reached."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    ab = socket.socket(socket.AF_UNIX)
    ab.bind(b"\0zerotir-test-abstract")
    ab.listen()
    hits, stop = [], threading.Event()

    def accept():
        srv.settimeout(0.05)
        while not stop.is_set():
            try:
                hits.append(srv.accept())
            except OSError:
                pass

    t = threading.Thread(target=accept)
    t.start()
    try:
        r1 = sb.run(f"import socket; s = socket.create_connection(('127.0.0.1', {port}), timeout=1); print('in')")
        r2 = sb.run("import socket; s = socket.socket(socket.AF_UNIX); s.connect(b'\\0zerotir-test-abstract'); "
                    "print('in')")
    finally:
        stop.set()
        t.join()
        srv.close()
        ab.close()
    assert r1.status == "error" and "in" not in r1.stdout, r1
    assert r2.status == "error" and "in" not in r2.stdout, r2
    assert not hits


def test_runs_as_unprivileged_uid_with_seccomp(sb, leakcheck):
    r = sb.run("import os\nst = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() "
               "if ':\\t' in l)\nprint(os.getuid() >= 10000000, st['Seccomp'].strip(), st['NoNewPrivs'].strip(), "
               "st['CapEff'].strip())")
    assert r.stdout == "True 2 1 0000000000000000\n", r
