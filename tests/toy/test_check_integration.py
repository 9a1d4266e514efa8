"""Integration: the base check runs through the real eval path (rollout, isolated sandbox, verifier) on the
shipped base: a handful of held-out problems, one sample each."""

import pytest

pytestmark = pytest.mark.integration


def test_check_base_through_evaluate():
    from zerotir.toy.check import check_base

    s = check_base("toy", n=6, temperature=1.0, seed=0, overrides=["rollout.max_total_tokens=128"])
    assert s["n"] == 6 and s["code_responses"] == round(6 * s["code_ratio"])
    assert 0.0 <= s["accuracy"] <= 1.0 and s["mean_response_tokens"] > 0
    by = s["by_kind"]   # the 6 problems by kind (toy problems carry their kind), adding up to the totals
    assert "?" not in by and sum(k["n"] for k in by.values()) == 6
    assert sum(k["code_responses"] for k in by.values()) == s["code_responses"]
