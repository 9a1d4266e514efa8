"""Mixed load with hostile requests: nothing lost, nothing mismatched (nonce per request), nothing leaked.

The default tier runs a small version; the full one (2,000 requests, then a census after 10,000 executions) is
`@pytest.mark.slow` (ZEROTIR_SLOW=1) and also `bench/sandbox.py`.
"""

import pytest

from tests.sandbox.conftest import full_kwargs, needs_full
from zerotir.sandbox import Sandbox
from tests.support.census import idle_baseline, load_test
from zerotir.sandbox.pool import CONTEXT_PROCS

pytestmark = pytest.mark.timeout(1800)


def _check(sb, reports, first):
    last = idle_baseline(sb, settle_s=1.0)
    assert sum(r.lost for r in reports) == 0
    assert sum(r.mismatched for r in reports) == 0, [r.examples for r in reports]
    h = sb.health()
    assert h["ok"]
    assert last.uid_procs == CONTEXT_PROCS * h["ready_contexts"], (first, last)
    assert last.tmp_entries <= first.tmp_entries and last.shm_entries <= first.shm_entries
    assert last.open_fds - 2 * h["ready_contexts"] <= first.open_fds - 2 * 4  # 2 fds per warm context


@needs_full
def test_small_mixed_load(sb):
    first = idle_baseline(sb, settle_s=1.0)
    rep = load_test(sb, n=150, hostile_share=0.12, concurrency=4, seed=7, timeout_s=1.0)
    assert rep.hostile >= 10
    _check(sb, [rep], first)


@needs_full
@pytest.mark.slow
def test_full_load_and_census():
    with Sandbox(workers=2, timeout_s=1.0, **full_kwargs()) as sb:
        first = idle_baseline(sb, settle_s=1.0)
        reports = [load_test(sb, n=2000, hostile_share=0.12, concurrency=4, seed=0)]
        assert reports[0].hostile >= 200
        done = 2000
        while done < 10_000:
            reports.append(load_test(sb, n=2000, concurrency=4, seed=len(reports)))
            done += 2000
        _check(sb, reports, first)
