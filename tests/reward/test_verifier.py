"""The verifier pool: hostile answers come back wrong within the limit, workers are replaced, it never raises."""

from __future__ import annotations

import os
import signal
import time

import pytest

from zerotir.reward import Verifier

DEEP_FRACTION = "\\frac{1}{" * 10_000 + "2" + "}" * 10_000
HUGE_MATRIX = "\\begin{pmatrix}" + "\\\\".join(["&".join(["x"] * 300)] * 300) + "\\end{pmatrix}"
HOSTILE = {"power-tower": "10^{10^{10}}", "deep-fraction": DEEP_FRACTION, "huge-matrix": HUGE_MATRIX}


def test_worker_killed_from_outside_is_replaced(verifier):
    assert len(verifier.pids()) == 2
    os.kill(verifier.pids()[0], signal.SIGKILL)
    time.sleep(0.1)
    res = verifier.verify_many([(str(k), str(k)) for k in range(100, 106)])
    assert [r.correct for r in res] == [True] * 6
    assert len(verifier.pids()) == 2


def test_garbage_never_raises(verifier):
    junk = ["\\", "}{", "{{{", "\\frac{", "\x00", "∞∞", "\\begin{pmatrix}", "$$", "x" * 60, "\\boxed{\\boxed{1}}"]
    res = verifier.verify_many([(j, "1") for j in junk] + [("1", j) for j in junk])
    assert len(res) == 2 * len(junk)
    assert [r.correct for r in res[:9]] == [False] * 9


def test_length_cap_rejects_without_parsing():
    v = Verifier(workers=1, timeout_s=1.0, max_answer_chars=1000)   # never started: the cap answers first
    try:
        t0 = time.monotonic()
        (res,) = v.verify_many([(DEEP_FRACTION, "5")])
        assert res.correct is False and "longer than 1000" in res.error
        assert time.monotonic() - t0 < 0.05 and v.pids() == []
    finally:
        v.close()


def test_close_leaves_no_process():
    v = Verifier(workers=1, timeout_s=1.0)
    with v:
        procs = [w.proc for w in v._workers + v._spares]
        assert len(procs) == 2 and all(p.poll() is None for p in procs)     # one worker + one warm spare
    assert all(p.poll() is not None for p in procs)


def warm(verifier) -> None:
    """Wait until every worker has started (the previous hostile item's worker was replaced): the limit is per item
    once a worker has it, and a worker's start-up (importing math-verify, seconds on a loaded machine) is not in it."""
    deadline, i = time.monotonic() + 60, 0
    while time.monotonic() < deadline:
        verifier.verify_many([(f"{i}+{k}", "0") for k in range(4)])    # fresh pairs: never cached
        if all(w.ready for w in verifier._workers):
            return
        i += 1
        time.sleep(0.05)
    raise AssertionError("verifier workers did not start within 60 s")


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_answer_returns_wrong_within_the_limit(verifier, name):
    warm(verifier)
    pids_before = verifier.pids()
    t0 = time.monotonic()
    (res,) = verifier.verify_many([(HOSTILE[name], "5")])
    elapsed = time.monotonic() - t0
    assert res.correct is False
    assert res.timed_out or res.error, res
    # CPU-time limit 1 s, wall cap 2 s on a loaded machine; 1 s more for bookkeeping (the kill is not waited for)
    assert elapsed < verifier.timeout_s * verifier.wall_factor + 1.0, f"{name} took {elapsed:.2f}s"
    if res.timed_out:
        assert verifier.pids() != pids_before          # the stuck worker was killed and replaced
    # the pool still answers, correctly
    assert [r.correct for r in verifier.verify_many([("\\frac{1}{2}", "0.5"), ("3", "4")])] == [True, False]


def test_repeated_hostile_answer_is_cached(verifier):
    verifier.verify_many([(HOSTILE["power-tower"], "5")])       # cached already when the test above ran
    t0 = time.monotonic()
    (res,) = verifier.verify_many([(HOSTILE["power-tower"], "5")])
    assert res.correct is False and time.monotonic() - t0 < 0.1


def test_workers_that_cannot_start_give_wrong_not_a_hang(monkeypatch):
    import zerotir.reward.verifier as vmod

    monkeypatch.setattr(vmod.sys, "executable", "/bin/false")    # every worker exits at once
    v = Verifier(workers=1, timeout_s=1.0)
    try:
        t0 = time.monotonic()
        res = v.verify_many([("1", "1"), ("2", "2")])
        assert [r.correct for r in res] == [False, False] and all(r.error for r in res)
        assert time.monotonic() - t0 < 10
    finally:
        v.close()
