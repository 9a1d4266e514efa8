"""One contract, two implementations: the local pool and the HTTP client against a real local server.

Every test takes `box` (parametrised: "local", "http"), so a behaviour pinned down here cannot differ between them.
The contract itself is written in zerotir/sandbox/protocol.py.
"""

import asyncio

import pytest

from tests.sandbox.remote_server import served
from zerotir.sandbox.client import RemoteSandbox
from zerotir.sandbox.protocol import SandboxForkError, SandboxLike, SessionLike
from zerotir.sandbox.server import make_app

pytestmark = pytest.mark.timeout(180)

TOKEN = "contract-t0ken"


@pytest.fixture(scope="module")
def http_box(sb):
    with served(make_app(sb, token=TOKEN)) as url:
        client = RemoteSandbox(url, token=TOKEN, timeout_s=1.0)  # the shared pool's default timeout, as local
        yield client
        client.close()


@pytest.fixture(params=["local", "http"])
def box(request, sb):
    return sb if request.param == "local" else request.getfixturevalue("http_box")


def test_both_satisfy_the_protocol(box):
    assert isinstance(box, SandboxLike)
    with box.session() as s:
        assert isinstance(s, SessionLike)


def test_run_statuses(box):
    r = box.run("print(1+1)")
    assert (r.status, r.stdout, r.exit_code) == ("ok", "2\n", 0)
    assert isinstance(r.duration_s, float) and r.duration_s > 0
    r = box.run("raise ValueError('boom')")
    assert r.status == "error" and r.exit_code == 1 and "ValueError: boom" in r.stderr
    r = box.run("import sys; sys.exit(3)")
    assert (r.status, r.exit_code) == ("error", 3)
    r = box.run("import time\nprint('before', flush=True)\nwhile True: pass", timeout_s=0.3)
    assert r.status == "timeout" and r.stdout == "before\n"


def test_output_cap(box):
    r = box.run("print('x' * 100000)")
    assert r.status == "ok" and r.truncated and len(r.stdout) <= 4096  # the shared pool caps at 4096 bytes


def test_run_many_keeps_input_order(box):
    rs = box.run_many([f"import time; time.sleep({0.05 * (5 - i)}); print({i})" for i in range(5)])
    assert [r.stdout for r in rs] == [f"{i}\n" for i in range(5)]


def test_arun_concurrent_from_one_loop(box):
    # what is tested is 12 calls in flight from one event loop, not the time limit: the shared pool's 1 s once timed a
    # call out when `make test` had both cores busy (one '' among the outputs), so these calls get 10 s
    async def main():
        return await asyncio.gather(*(box.arun(f"print({i} * 2)", timeout_s=10.0) for i in range(12)))

    rs = asyncio.run(main())
    assert [r.stdout for r in rs] == [f"{2 * i}\n" for i in range(12)], [(r.status, r.stderr[-200:]) for r in rs]


def test_session_state_rollback_and_fork(box):
    with box.session() as s:
        assert s.run("x = 20").status == "ok"
        assert s.run("print(x + 1)").stdout == "21\n"
        assert s.run("x = 99\nwhile True: pass", timeout_s=0.3).status == "timeout"
        assert s.run("print(x)").stdout == "20\n"  # the cell that timed out was rolled back
        with s.fork() as f:
            assert isinstance(f, SessionLike)
            f.run("x = 0")
            assert f.run("print(x)").stdout == "0\n"
        assert s.run("print(x)").stdout == "20\n"  # the fork's writes did not reach the parent


def test_closed_session_says_so(box):
    s = box.session()
    s.run("y = 1")
    s.close()
    s.close()  # idempotent
    r = s.run("print(y)")
    assert r.status == "sandbox_error" and "closed" in r.stderr


def test_async_session_and_aclose(box):
    async def main():
        s = box.session()
        await s.arun("a = 41")
        r = await s.arun("print(a + 1)")
        await s.aclose()
        await s.aclose()
        return r, await s.arun("print(a)")

    r, after = asyncio.run(main())
    assert r.stdout == "42\n" and after.status == "sandbox_error"


def test_failed_fork_raises_instead_of_a_fresh_session(box):
    s = box.session()
    s.run("z = 1")
    s.close()
    with pytest.raises(SandboxForkError):
        s.fork()


def test_health(box):
    h = box.health()
    assert h["ok"] is True
