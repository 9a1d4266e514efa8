"""Per-call quotas: the cgroup arithmetic and parsers (pure, hand-checked), and hostile calls against a real pool.

The hostile half needs isolation='full' (bubblewrap, root) and writable cgroups; it skips, saying which, elsewhere.
"""

import logging

import pytest

from tests.sandbox.conftest import full_isolation_available, quotas_unavailable
from zerotir.sandbox import quotas as Q

pytestmark = pytest.mark.timeout(180)

MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""
PROC_CGROUP = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/x\n0::/user.slice\n"


def test_cpu_quota_is_cores_times_period():
    assert Q.cpu_quota_us(1) == 100_000
    assert Q.cpu_quota_us(1.5) == 150_000
    assert Q.cpu_quota_us(0.25, period_us=200_000) == 50_000
    assert Q.cpu_quota_us(0.001) == 1000  # the kernel's minimum
    with pytest.raises(ValueError):
        Q.cpu_quota_us(0)


def test_limit_writes_per_layout():
    assert Q.limit_writes("v2", 512, 64, 2) == {"v2": [("memory.max", "536870912"), ("memory.swap.max", "0"),
                                                       ("pids.max", "64"), ("cpu.max", "200000 100000")]}
    v1 = Q.limit_writes("v1", 1, 8, 0.5)
    assert v1["memory"] == [("memory.limit_in_bytes", "1048576"), ("memory.memsw.limit_in_bytes", "1048576")]
    assert v1["pids"] == [("pids.max", "8")]
    assert v1["cpu"] == [("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "50000")]


def test_parsers():
    m = Q.parse_cgroup_mounts(MOUNTINFO)
    assert m == {"cpu": ("/sys/fs/cgroup/cpu", "/"), "memory": ("/sys/fs/cgroup/memory", "/"),
                 "pids": ("/sys/fs/cgroup/pids", "/"), "v2": ("/sys/fs/cgroup/unified", "/")}
    own = Q.parse_own_cgroups(PROC_CGROUP)
    assert own == {"pids": "/", "memory": "/process_api/abc", "cpu": "/x", "v2": "/user.slice"}
    assert Q.cgroup_dir("/sys/fs/cgroup/memory", "/", "/process_api/abc") == "/sys/fs/cgroup/memory/process_api/abc"
    # A container's mount whose root is its own cgroup: the part above the root is not in the path.
    assert Q.cgroup_dir("/sys/fs/cgroup", "/docker/1", "/docker/1/sub") == "/sys/fs/cgroup/sub"
    assert Q.oom_kill_count("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n") == 3
    assert Q.oom_kill_count("low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\n") == 1
    assert Q.oom_kill_count("") == 0


needs_quotas = pytest.mark.skipif(quotas_unavailable() is not None, reason=str(quotas_unavailable()))


def test_v2_group_goes_next_to_a_cgroup_that_holds_processes(tmp_path):
    own = tmp_path / "system.slice" / "runner.service"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert Q._v2_base(str(own), "/system.slice/runner.service") == str(tmp_path / "system.slice")
    (own / "cgroup.controllers").write_text("cpu io\n")
    with pytest.raises(OSError, match="memory/pids are not delegated"):
        Q._v2_base(str(own), "/system.slice/runner.service")


@pytest.fixture(scope="module")
def qbox():
    from zerotir.sandbox import Sandbox

    box = Sandbox(workers=1, timeout_s=20.0, memory_mb=512, cpu_cores=0.5, max_output_bytes=4096, spares=0)
    yield box
    box.close()


# 8 children each allocate and touch 300 MB and hold it 2 s: 2.4 GB if memory were limited per process.
BOMB = """
import os, time
kids = []
for i in range(8):
    pid = os.fork()
    if pid == 0:
        b = b'x' * (300 << 20)
        time.sleep(2.0)
        os._exit(0)
    kids.append(pid)
alive = 0
for pid in kids:
    _, st = os.waitpid(pid, 0)
    alive += os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0
print('survivors', alive)
"""


@needs_quotas
def test_forked_memory_bomb_gets_oom_and_the_pool_stays_healthy(qbox):
    r = qbox.run(BOMB)
    assert r.status == "oom", r
    assert "memory quota of 512 MB" in r.stderr
    if "survivors" in r.stdout:  # at most one 300 MB child can have held its memory under a 512 MB quota
        assert int(r.stdout.split()[1]) <= 1, r.stdout
    ok = qbox.run("import sympy; print(sympy.factorint(12))")
    assert ok.status == "ok" and ok.stdout == "{2: 2, 3: 1}\n"
    assert qbox.health()["ok"]


# Four children spin for 1.5 s of wall time; with 0.5 cores their CPU time must stay near 0.5 x wall.
SPIN = """
import os, time
t0 = time.time()
kids = []
for i in range(4):
    pid = os.fork()
    if pid == 0:
        end = time.time() + 1.5
        while time.time() < end:
            pass
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.waitpid(pid, 0)
t = os.times()
print((t.children_user + t.children_system) / (time.time() - t0))
"""


@needs_quotas
def test_many_spinners_use_at_most_cpu_cores(qbox):
    r = qbox.run(SPIN)
    assert r.status == "ok", r
    cores_used = float(r.stdout)
    assert cores_used <= 0.5 * 1.2 + 0.05, f"{cores_used:.2f} cores used with cpu_cores=0.5"


@needs_quotas
def test_session_memory_bomb_is_that_cell_only(qbox):
    with qbox.session() as s:
        s.run("kept = 41")
        assert s.run(BOMB).status == "oom"
        r = s.run("print(kept + 1)")
        assert r.status == "ok" and r.stdout == "42\n", r


@pytest.mark.skipif(not full_isolation_available(), reason="isolation='full' needs bubblewrap and root")
def test_full_refuses_without_quotas_and_names_what_is_missing(monkeypatch):
    from zerotir.sandbox import Sandbox, SandboxUnavailable

    monkeypatch.setattr(Q, "parse_cgroup_mounts", lambda text: {})
    with pytest.raises(SandboxUnavailable, match=r"cgroup v2: no v2 hierarchy.*cgroup v1: no memory/pids/cpu.*"
                                                 r"quotas=False"):
        Sandbox(isolation="full")


@pytest.mark.skipif(not full_isolation_available(), reason="isolation='full' needs bubblewrap and root")
def test_quotas_false_is_an_explicit_escape_hatch(monkeypatch, caplog):
    from zerotir.sandbox import Sandbox

    monkeypatch.setattr(Q, "parse_cgroup_mounts", lambda text: {})
    with caplog.at_level(logging.WARNING, logger="zerotir.sandbox"):
        box = Sandbox(workers=1, spares=0, quotas=False)
    try:
        assert any("quotas=False" in m for m in caplog.messages)
        assert box.health()["quotas"] is None
        assert box.run("print(6 * 7)").stdout == "42\n"
    finally:
        box.close()
