"""The Python API contract: results, statuses, limits, sessions, forks, threads and asyncio."""

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.sandbox.conftest import full_kwargs
from zerotir.config import SandboxConfig
from zerotir.sandbox import ExecResult, Sandbox, SandboxUnavailable, make_sandbox
from zerotir.sandbox.pool import check_preimport
from zerotir.types import EXEC_STATUSES

pytestmark = pytest.mark.timeout(180)  # a hang becomes a failure with a traceback


def test_run_returns_exec_result(sb, leakcheck):
    r = sb.run("print(1+1)")
    assert isinstance(r, ExecResult)
    assert (r.status, r.stdout, r.stderr, r.exit_code, r.signal, r.truncated) == ("ok", "2\n", "", 0, None, False)
    assert 0 < r.duration_s < 1.0


def test_math_stack_is_warm(sb, leakcheck):
    r = sb.run("import sympy; print(sympy.factorint(2**64-1))")
    assert r.stdout == "{3: 1, 5: 1, 17: 1, 257: 1, 641: 1, 65537: 1, 6700417: 1}\n"
    r = sb.run("import numpy as np, fractions, itertools, math\nprint(int(np.arange(10).sum()), "
               "fractions.Fraction(1, 3) + 1, len(list(itertools.permutations(range(4)))), math.comb(10, 3))")
    assert r.stdout == "45 4/3 24 120\n", r


def test_error_keeps_stdout_and_traceback(sb, leakcheck):
    r = sb.run("print('before')\nx = 1 / 0")
    assert r.status == "error" and r.exit_code == 1 and r.stdout == "before\n"
    assert r.stderr.startswith("Traceback") and 'File "<cell>", line 2' in r.stderr
    assert "ZeroDivisionError" in r.stderr and "_zygote" not in r.stderr  # no sandbox frames shown


def test_syntax_error(sb, leakcheck):
    r = sb.run("def f(:\n  pass")
    assert r.status == "error" and "SyntaxError" in r.stderr


def test_timeout_is_prompt_and_keeps_partial_output(sb, leakcheck):
    t0 = time.monotonic()
    r = sb.run("import time\nprint('partial')\nwhile True: time.sleep(0.01)", timeout_s=0.5)
    wall = time.monotonic() - t0
    assert r.status == "timeout" and r.stdout == "partial\n" and r.signal == 9
    assert 0.5 <= r.duration_s <= 0.6, r.duration_s  # deadline + 0.1 s
    assert wall < 0.7


def test_partial_output_without_newline_survives_a_kill(sb, leakcheck):
    r = sb.run("import sys\nsys.stdout.write('no newline')\nwhile True: pass", timeout_s=0.3)
    assert r.status == "timeout" and r.stdout == "no newline"


def test_output_cap_is_per_stream_and_marks_truncation(sb, leakcheck):
    r = sb.run("import sys\nprint('a' * 5000)\nsys.stderr.write('b' * 10)")
    assert r.status == "ok" and r.truncated
    assert r.stdout == "a" * 4096 and r.stderr == "b" * 10


def test_multibyte_output_cut_at_cap_is_decoded_with_replacement(sb, leakcheck):
    r = sb.run("print('é' * 3000)")  # 6000 bytes; the 4096-byte cut lands inside a character or not
    assert r.truncated and set(r.stdout) <= {"é", "\ufffd"} and len(r.stdout) >= 2047


def test_statuses_are_in_the_shared_vocabulary(sb, leakcheck):
    codes = ["pass", "1/0", "while True: pass", "x = ' ' * 10**10", "import ctypes; ctypes.string_at(0)"]
    got = [sb.run(c, timeout_s=0.3).status for c in codes]
    assert got == ["ok", "error", "timeout", "oom", "killed"]
    assert set(got) <= set(EXEC_STATUSES)


def test_stateless_calls_share_nothing(sb, leakcheck):
    sb.run("x = 5\nimport builtins; builtins.y = 1")
    r = sb.run("print('x' in globals(), hasattr(__import__('builtins'), 'y'))")
    assert r.stdout == "False False\n"


def test_session_keeps_state(sb, leakcheck):
    with sb.session() as s:
        assert s.run("x = 21").status == "ok"
        r = s.run("print(x * 2)")
        assert r.stdout == "42\n"
        s.run("import sympy\nn = sympy.Symbol('n')")
        assert s.run("print(sympy.expand((n + 1)**2))").stdout == "n**2 + 2*n + 1\n"


def test_session_exception_keeps_prior_effects(sb, leakcheck):
    with sb.session() as s:
        r = s.run("a = 1\nraise ValueError('x')")
        assert r.status == "error"
        assert s.run("print(a)").stdout == "1\n"


def test_session_rolls_back_a_timed_out_or_crashed_cell(sb, leakcheck):
    with sb.session() as s:
        s.run("x = 1")
        r = s.run("x = 2\nwhile True: pass", timeout_s=0.3)
        assert r.status == "timeout" and r.duration_s <= 0.4
        assert s.run("print(x)").stdout == "1\n"
        r = s.run("x = 3\nimport ctypes; ctypes.string_at(0)")
        assert r.status == "killed" and r.signal == 11
        assert s.run("print(x)").stdout == "1\n"
        r = s.run("x = 4\nimport os; os._exit(5)")
        assert r.status == "error" and r.exit_code == 5
        assert s.run("print(x)").stdout == "1\n"


def test_session_background_processes_die_with_the_session(sb, leakcheck):
    with sb.session() as s:
        s.run("import os, time\nif os.fork() == 0:\n    os.setsid(); time.sleep(60)")
        assert s.run("print('alive')").stdout == "alive\n"
    # leakcheck asserts nothing is left under the sandbox uids


def test_session_fork_is_an_independent_copy(sb, leakcheck):
    with sb.session() as s:
        s.run("x = [1, 2]")
        with s.fork() as f:
            f.run("x.append(3)")
            s.run("x.append(99)")
            assert f.run("print(x)").stdout == "[1, 2, 3]\n"
            assert s.run("print(x)").stdout == "[1, 2, 99]\n"
            with f.fork() as g:
                assert g.run("print(len(x))").stdout == "3\n"
        assert s.run("print(x)").stdout == "[1, 2, 99]\n"


def test_sessions_are_isolated_from_each_other(sb, leakcheck):
    with sb.session() as a, sb.session() as b:
        a.run("open('/tmp/mine', 'w').write('a'); secret = 1")
        r = b.run("import os; print(os.listdir('/tmp'), 'secret' in globals())")
        assert r.stdout == "[] False\n"
        r = b.run("import os, signal\ntry: os.kill(-1, signal.SIGKILL)\nexcept OSError: pass")
        assert a.run("print(secret)").stdout == "1\n"


def test_closed_session_returns_sandbox_error(sb, leakcheck):
    s = sb.session()
    s.run("x = 1")
    s.close()
    assert s.run("print(x)").status == "sandbox_error"


def test_many_threads_at_once(sb, leakcheck):
    def job(i):
        if i % 2:
            r = sb.run(f"print({i} * 3)")
            return r.stdout == f"{i * 3}\n"
        with sb.session() as s:
            s.run(f"v = {i}")
            return s.run("print(v + 1)").stdout == f"{i + 1}\n"

    with ThreadPoolExecutor(16) as ex:
        assert all(ex.map(job, range(48)))


def test_many_asyncio_tasks_at_once(sb, leakcheck):
    async def traj(i):
        s = sb.session()
        try:
            await s.arun(f"n = {i}")
            r1 = await s.arun("print(n * n)")
            r2 = await sb.arun(f"print({i})")
            return r1.stdout == f"{i * i}\n" and r2.stdout == f"{i}\n"
        finally:
            await s.aclose()

    async def main():
        return await asyncio.gather(*(traj(i) for i in range(40)))

    assert all(asyncio.run(main()))


def test_run_many_keeps_order(sb, leakcheck):
    rs = sb.run_many([f"print({i})" for i in range(20)])
    assert [r.stdout for r in rs] == [f"{i}\n" for i in range(20)]


def test_math_stack_is_preloaded_by_default_and_lean_workers_hold_none(sb):
    probe = "import sys\nprint(sorted(m for m in ('numpy', 'sympy', 'scipy') if m in sys.modules))"
    assert sb.run(probe).stdout == "['numpy', 'scipy', 'sympy']\n"
    with Sandbox(workers=1, timeout_s=20.0, preimport=(), **full_kwargs()) as lean:
        assert lean.run(probe).stdout == "[]\n"
        with lean.session() as s:  # the code can still import what the workers did not: at its own cost
            assert s.run("import math, fractions\nx = math.gcd(84, 36)").status == "ok"
            r = s.run("import sympy\nprint(x, sympy.Integer(6) * 7)")
        assert r.stdout == "12 42\n", r


def test_preimport_names_are_checked():
    assert check_preimport(["numpy", "sympy.ntheory"]) == ("numpy", "sympy.ntheory")
    assert check_preimport([]) == ()
    for bad in (["numpy", "sym py"], ["os; rm"], [""], ["1numpy"]):
        with pytest.raises(ValueError, match="is not a module name"):
            check_preimport(bad)
    with pytest.raises(ValueError, match="list of module names"):
        check_preimport("numpy")
    with pytest.raises(ValueError, match="is not a module name"):
        make_sandbox(SandboxConfig(preimport=["numpy", "no such"]))


def test_make_sandbox_local_and_validation():
    with pytest.raises(ValueError, match="backend"):
        make_sandbox(SandboxConfig(backend="carrier-pigeon"))
    with pytest.raises(ValueError, match="URL"):
        make_sandbox(SandboxConfig(backend="remote", url=""))


def test_unknown_isolation_is_refused():
    with pytest.raises(SandboxUnavailable, match="unknown isolation"):
        Sandbox(isolation="strong")


def test_missing_layer_is_named(monkeypatch):
    import zerotir.sandbox.isolation as isolation

    monkeypatch.setattr(isolation.shutil, "which", lambda name: None)
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        Sandbox(isolation="full")


@pytest.mark.parametrize("level", ["rlimits", "none"])
def test_weaker_levels_work_and_warn(level, caplog):
    with caplog.at_level(logging.WARNING, logger="zerotir.sandbox"):
        box = Sandbox(workers=1, timeout_s=0.5, isolation=level, spares=0)
    try:
        assert any("NOT isolated" in m for m in caplog.messages)
        assert box.run("print(2 + 2)").stdout == "4\n"
        r = box.run("while True: pass")
        assert r.status == "timeout"
        with box.session() as s:
            s.run("z = 3")
            assert s.run("print(z)").stdout == "3\n"
            s.run("open('left.txt', 'w').write('x')")  # its private temp dir must go with it
            workdir = s.run("import os; print(os.getcwd())").stdout.strip()
    finally:
        box.close()
    # This session's own directory (other sandboxes on the machine may have live ones of their own).
    assert "zerotir-ctx-" in workdir and not os.path.exists(workdir)


def test_fork_outlives_its_origin(sb, leakcheck):
    s = sb.session()
    s.run("k = 'kept'")
    f = s.fork()
    s.close()
    assert f.run("print(k)").stdout == "kept\n"
    f.close()


def test_forked_process_gets_an_error_not_a_hang(sb):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=lambda: q.put(sb.run("print(1)").status))
    p.start()
    p.join(30)
    assert q.get(timeout=5) == "sandbox_error"


def test_cancelled_call_stops_the_cell_and_leaks_nothing(sb, leakcheck):
    async def main():
        s = sb.session()
        try:
            await s.arun("x = 1")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(s.arun("while True: pass", timeout_s=5), 0.3)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(sb.arun("import time; time.sleep(5)", timeout_s=5), 0.3)
            return await s.arun("print(x)")
        finally:
            await asyncio.to_thread(s.close)

    r = asyncio.run(main())
    assert r.stdout == "1\n", r


def test_ordinary_python_features_work_inside(sb, leakcheck):
    r = sb.run("import multiprocessing as mp\ndef sq(x): return x * x\nwith mp.Pool(2) as p: print(p.map(sq, range(4)))\n"
               "import subprocess, sys\nprint(subprocess.run([sys.executable, '-c', 'print(5)'], capture_output=True, "
               "text=True).stdout.strip(), __name__)", timeout_s=5)
    assert r.stdout == "[0, 1, 4, 9]\n5 __main__\n", r


def test_fork_that_cannot_clone_raises_instead_of_a_fresh_session(sb, leakcheck):
    from zerotir.sandbox import SandboxForkError

    s = sb.session()
    with s.fork() as f:  # never run: its (empty) state is a fresh session's
        assert f.run("print(1)").stdout == "1\n"
    s.run("x = 1")
    r = s.run("import os, signal\nos.kill(-1, signal.SIGKILL)\nos.kill(os.getpid(), signal.SIGKILL)")
    assert r.status == "killed"
    with pytest.raises(SandboxForkError, match="lost"):
        s.fork()
    s.close()
    with pytest.raises(SandboxForkError, match="closed"):
        s.fork()


def test_infrastructure_failures_become_sandbox_error_in_one_place():
    from zerotir.sandbox.errors import SandboxError, error_result

    r = error_result(SandboxError("sandbox: worker died"), stdout="partial", stderr="so far")
    assert (r.status, r.stdout, r.stderr) == ("sandbox_error", "partial", "so far\nsandbox: worker died\n")
    assert error_result(ValueError("boom")).stderr == "sandbox: ValueError: boom\n"
