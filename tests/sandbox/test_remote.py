"""The HTTP service and its client (loopback only), and the `zerotir sandbox exec` command."""

import asyncio
import json
import subprocess
import sys
import urllib.request

import pytest

from zerotir.config import SandboxConfig
from zerotir.sandbox import make_sandbox
from zerotir.sandbox.client import RemoteSandbox
from zerotir.sandbox.server import make_app
from tests.sandbox.remote_server import free_port, served

pytestmark = pytest.mark.timeout(180)  # a hang becomes a failure with a traceback

TOKEN = "t0k3n"


@pytest.fixture(scope="module")
def server(sb):
    """The shared pool served on a loopback port from a background thread."""
    with served(make_app(sb, token=TOKEN)) as url:
        yield url


def test_remote_same_interface(server):
    cfg = SandboxConfig(backend="remote", url=server, token=TOKEN, timeout_s=1.0)
    with make_sandbox(cfg) as rs:
        assert isinstance(rs, RemoteSandbox)
        r = rs.run("print(1+1)")
        assert (r.status, r.stdout) == ("ok", "2\n")
        assert rs.run("while True: pass", timeout_s=0.3).status == "timeout"
        with rs.session() as s:
            s.run("x = 20")
            assert s.run("print(x + 1)").stdout == "21\n"
            with s.fork() as f:
                f.run("x = 0")
                assert f.run("print(x)").stdout == "0\n"
            assert s.run("print(x)").stdout == "20\n"
        assert rs.health()["ok"]


def test_remote_async_bounded_concurrency(server):
    with RemoteSandbox(server, token=TOKEN, concurrency=4) as rs:
        async def main():
            return await asyncio.gather(*(rs.arun(f"print({i})") for i in range(30)))

        rs_out = asyncio.run(main())
        assert [r.stdout for r in rs_out] == [f"{i}\n" for i in range(30)]


def _post(url, payload, token=TOKEN):
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


def test_batch_endpoint_keeps_order_and_ids(server):
    st, d = _post(server + "/v1/batch", {"requests": [{"code": f"print({i})", "id": f"r{i}"} for i in range(5)]})
    assert st == 200
    assert [(x["id"], x["stdout"]) for x in d["results"]] == [(f"r{i}", f"{i}\n") for i in range(5)]


def test_token_required_and_bad_input_rejected(server):
    with pytest.raises(urllib.error.HTTPError) as e:
        _post(server + "/v1/exec", {"code": "print(1)"}, token="wrong")
    assert e.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as e:
        _post(server + "/v1/exec", {"code": 5})
    assert e.value.code == 400
    with RemoteSandbox(server, token="wrong", retries=1) as rs:
        r = rs.run("print(1)")
        assert r.status == "sandbox_error" and "401" in r.stderr


def test_health_and_metrics(server):
    with urllib.request.urlopen(server + "/health", timeout=10) as resp:
        assert json.loads(resp.read())["ok"] is True
    req = urllib.request.Request(server + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    assert 'zerotir_sandbox_executions_total{status="ok"}' in text


def test_unreachable_server_is_sandbox_error_after_retries():
    with RemoteSandbox(f"http://127.0.0.1:{free_port()}", retries=2) as rs:
        r = rs.run("print(1)")
    assert r.status == "sandbox_error" and "remote call failed" in r.stderr


def test_exec_command_prints_json():
    p = subprocess.run([sys.executable, "-m", "zerotir.cli", "sandbox", "exec", "--timeout-s", "2"],
                       input="print(sum(range(10)))", capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["status"] == "ok" and d["stdout"] == "45\n"


def test_remote_session_async(server):
    with RemoteSandbox(server, token=TOKEN) as rs:
        async def main():
            s = rs.session()
            await asyncio.gather(s.arun("a = 1"), asyncio.sleep(0))
            r = await s.arun("print(a + 1)")
            await s.aclose()
            return r

        assert asyncio.run(main()).stdout == "2\n"


def test_replicas_rotate_and_retry_on_a_dead_one(server):
    dead = f"http://127.0.0.1:{free_port()}"
    with RemoteSandbox(f"{server},{dead}", token=TOKEN, retries=2) as rs:
        rs_out = [rs.run(f"print({i})") for i in range(6)]  # half first try the dead replica, then retry
        assert [r.stdout for r in rs_out] == [f"{i}\n" for i in range(6)]
        assert rs.health()["ok"] is False
