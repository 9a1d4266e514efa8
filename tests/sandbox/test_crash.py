"""Crash safety: a worker killed from outside is replaced, its in-flight call gets sandbox_error, nothing leaks."""

import os
import signal
import threading
import time

import pytest

from tests.sandbox.conftest import full_kwargs, needs_full, settled
from zerotir.sandbox import Sandbox
from tests.support.census import sandbox_uid_processes

pytestmark = pytest.mark.timeout(180)  # a hang becomes a failure with a traceback


@needs_full
def test_killed_worker_is_replaced_and_inflight_call_fails_cleanly():
    with Sandbox(workers=2, timeout_s=5.0, **full_kwargs()) as sb:
        sess = sb.session()
        assert sess.run("x = 1").status == "ok"
        results = {}

        def slow():
            results["r"] = sb.run("import time\nprint('started', flush=True)\ntime.sleep(3)\nprint('never')")

        threads = [threading.Thread(target=slow)]
        threads[0].start()
        time.sleep(0.4)  # the call is in flight
        t0 = time.monotonic()
        for pid in sb.worker_pids(include_spare=False):
            os.killpg(pid, signal.SIGKILL)
        threads[0].join(timeout=5)
        r = results["r"]
        assert r.status == "sandbox_error" and "never" not in r.stdout, r
        assert time.monotonic() - t0 < 1.0  # the caller learns at once, not at the timeout
        # A warm spare takes over immediately; serving resumes within a second.
        while sb.run("print('up')").stdout != "up\n":
            assert time.monotonic() - t0 < 1.0, "no worker serving within 1 s"
        deadline = time.monotonic() + 20
        while not sb.health()["ok"]:
            assert time.monotonic() < deadline, sb.health()
            time.sleep(0.05)
        assert sb.health()["restarts"] >= 2
        # The session's kernel died with its worker: one infrastructure error, then a fresh kernel that says so.
        assert sess.run("print(x)").status == "sandbox_error"
        r = sess.run("print(x)")
        assert r.status == "error" and "kernel was lost" in r.stderr
        sess.close()
        st = settled(sb)
        assert st["ok"] and st["uid_procs"] == st["expected_procs"], st
    # After close: no worker, no context, nothing under any of its uids.
    time.sleep(0.2)
    assert all(not os.path.exists(f"/proc/{p}") for p in sb.worker_pids())


@needs_full
def test_close_leaves_nothing_behind():
    sb = Sandbox(workers=2, timeout_s=2.0, **full_kwargs())
    pids = sb.worker_pids()
    s = sb.session()
    s.run("import os, time\nif os.fork() == 0:\n    time.sleep(60)")
    before_uid = set(sandbox_uid_processes(pids))
    assert before_uid
    sb.close()
    time.sleep(0.3)
    assert not [p for p in before_uid if os.path.exists(f"/proc/{p}")]
    assert not [p for p in pids if os.path.exists(f"/proc/{p}")]
    assert sb.run("print(1)").status == "sandbox_error"  # a closed pool still returns, never raises
