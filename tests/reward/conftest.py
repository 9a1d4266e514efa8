import pytest

from zerotir.reward import Verifier


@pytest.fixture(scope="session")
def verifier():
    """One real verifier pool for the reward tests (worker start-up is the slow part). No length cap, so hostile
    inputs reach math-verify and must be stopped by the time limit."""
    with Verifier(workers=2, timeout_s=1.0, max_answer_chars=10**6) as v:
        yield v
