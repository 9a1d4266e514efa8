"""The graded answer comes from the model's own text (reward.extract.trajectory_answer), checked on real rollouts:
scripted model streams, the real sandbox and two real tokenizers, so the tool blocks are exactly what the rollout
inserts and decodes."""

import dataclasses

import pytest
from scripted import ScriptedEngine

from zerotir.config import RolloutConfig
from zerotir.reward.extract import extract_answer, model_text, trajectory_answer
from zerotir.rollout.format import CODE_CLOSE, CODE_OPEN
from zerotir.rollout.tir import rollout
from zerotir.types import Problem

CODE = "print(chr(92) + 'boxed{' + str(3 + 4) + '}')"  # prints \boxed{7}; the code's text holds no box
FINALS = [("", None), ("So the answer is \\boxed{7}.", "7"), ("Hmm, \\boxed{8} then.", "8")]


@pytest.mark.parametrize("tok_name", ["tiny_tok", "smol_tok"])
def test_a_box_printed_by_the_code_is_not_the_answer(tok_name, request, sandbox):
    tok = request.getfixturevalue(tok_name)
    cfg = dataclasses.replace(RolloutConfig(), template="toy", max_total_tokens=300, max_new_tokens_per_turn=120)
    streams = {(g, 0): tok.encode(f"Let me compute.\n{CODE_OPEN}{CODE}{CODE_CLOSE}", add_special_tokens=False)
               + tok.encode(final, add_special_tokens=False) for g, (final, _) in enumerate(FINALS)}
    problems = [Problem(id=f"p{g}", prompt="What is 3+4?", answer="7") for g in range(len(FINALS))]
    trajs = rollout(problems, ScriptedEngine(tok, streams), sandbox, cfg, n_samples=1, max_tool_calls=1)
    for t, (final, want) in zip(trajs, FINALS):
        assert t.num_tool_calls == 1 and t.tool_calls[0].output.strip() == "\\boxed{7}", t.tool_calls
        assert extract_answer(t.response_text) == (want or "7")   # the tool's box is in the decoded response
        assert trajectory_answer(t) == want                       # but only the model's own box is graded
        assert "```output" not in model_text(t)
        assert model_text(t).endswith(final)
