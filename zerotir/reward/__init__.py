"""zerotir.reward: final-answer extraction, math-verify in killable worker processes, the reward scorer.

    extract_answer(text, fmt="boxed") -> str | None            extract.py (pure string code)
    Verifier(workers, timeout_s).verify_many([(pred, gold)])   verifier.py (never hangs, never raises)
    RewardScorer(cfg.reward).score(trajectories, max_total_tokens) -> ScoreSummary   scorer.py

Imports only the standard library, math-verify (inside worker processes) and zerotir.types/telemetry.
"""

from zerotir.reward.extract import ANSWER_FORMATS, extract_answer, last_boxed
from zerotir.reward.scorer import TOOL_ERROR_STATUSES, RewardScorer, ScoreSummary, overlong_penalty
from zerotir.reward.verifier import Verifier, VerifyResult

__all__ = ["ANSWER_FORMATS", "TOOL_ERROR_STATUSES", "RewardScorer", "ScoreSummary", "Verifier", "VerifyResult", "extract_answer",
           "last_boxed", "overlong_penalty"]
