"""Final-answer extraction: pure string cases."""

import time

import pytest

from zerotir.reward import extract_answer

CASES = [
    ("\\boxed{42}", "boxed", "42"),
    ("a \\boxed{1} b \\boxed{2}", "boxed", "2"),
    ("\\boxed{\\frac{1}{\\sqrt{2}}}", "boxed", "\\frac{1}{\\sqrt{2}}"),
    ("\\boxed{\\{1,2\\}}", "boxed", "\\{1,2\\}"),                    # escaped braces are content
    ("\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "boxed", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("\\boxed{3} then \\boxed{4", "boxed", "3"),                      # unclosed last box: the earlier one
    ("\\boxed{4", "boxed", None),
    ("\\boxed{  }", "boxed", None),
    ("\\fbox{x+1}", "boxed", "x+1"),
    ("\\boxed 7.", "boxed", "7"),
    ("\\boxedx{3}", "boxed", None),
    ("no answer", "boxed", None),
    ("", "boxed", None),
    ("<answer>\\boxed{5}</answer>", "answer_tag", "5"),
    ("<answer> $12$ </answer>", "answer_tag", "12"),
    ("\\boxed{5}", "answer_tag", None),                              # strict: no tag, no answer
    ("<answer>1</answer> later <answer>\\boxed{2}</answer>", "answer_tag", "2"),
    ("<answer>unclosed \\boxed{9}", "answer_tag", None),
]


@pytest.mark.parametrize("text,fmt,want", CASES)
def test_extract(text, fmt, want):
    assert extract_answer(text, fmt) == want


def test_unknown_format():
    with pytest.raises(ValueError, match="answer_format"):
        extract_answer("x", "xml")


def test_many_unclosed_boxes_is_linear():
    t0 = time.perf_counter()
    assert extract_answer("\\boxed{" * 50_000) is None
    assert time.perf_counter() - t0 < 2.0


# ------------------------------------------------------------------ whose text is graded: the model's, never the tool's

def _traj(pieces):
    """A Trajectory from (kind, text) pieces — 'model' text, 'tool' output (inserted as its block), or 'skip' (a call
    over budget with a message block) — with one token per character so segments line up with the text."""
    from zerotir.rollout.format import format_tool_output
    from zerotir.types import Segment, ToolCall, Trajectory

    text, segs, calls, mask = "", [], [], []
    for kind, piece in pieces:
        if kind == "model":
            body, k = piece, "model"
        else:
            body, k = format_tool_output(piece), "tool"
            calls.append(ToolCall(code="print(1)", status="ok" if kind == "tool" else "skipped", output=piece,
                                  executed=kind == "tool", output_tokens=len(body), output_segment=len(segs)))
        segs.append(Segment(k, len(text), len(text) + len(body)))
        mask += [int(k == "model")] * len(body)
        text += body
    t = Trajectory(problem_id="p", prompt_ids=[0], response_ids=list(range(len(text))), loss_mask=mask,
                   logprobs=[-0.1 * m for m in mask], segments=segs, tool_calls=calls, response_text=text)
    t.validate()
    return t


CODE = "Let me run it.\n```python\nprint(chr(92) + 'boxed{' + str(3 + 4) + '}')\n```"   # prints \boxed{7}
TOOL_ANSWER_CASES = [
    # (pieces, answer from the whole response (the old rule), answer from the model's text (the rule))
    ([("model", CODE), ("tool", "\\boxed{7}")], "7", None),                               # the code's box only
    ([("model", CODE), ("tool", "\\boxed{7}"), ("model", "So it is \\boxed{7}.")], "7", "7"),  # the model says it
    ([("model", "Guess \\boxed{3}. " + CODE), ("tool", "\\boxed{7}")], "7", "3"),         # the model's own, earlier
    ([("model", CODE), ("tool", "\\boxed{7}"), ("model", "Hmm."), ("skip", "budget spent \\boxed{9}")], "9", None),
    ([("model", "```output\n\\boxed{5}\n```\n")], "5", "5"),    # an output block the model wrote itself is its text
    ([("model", CODE), ("tool", "8"), ("model", "\\boxed{8}" + CODE), ("tool", "\\boxed{9}")], "9", "8"),
    # code is the model's own text: a box typed literally in it counts (a box the code computes does not)
    ([("model", "```python\nprint('\\\\boxed{6}')\n```"), ("tool", "\\boxed{6}")], "6", "6"),
]


@pytest.mark.parametrize("pieces,whole,model_only", TOOL_ANSWER_CASES)
def test_answer_comes_from_the_model_text_only(pieces, whole, model_only):
    from zerotir.reward.extract import model_text, trajectory_answer

    t = _traj(pieces)
    assert extract_answer(t.response_text) == whole          # the tool's box is in the response text…
    assert trajectory_answer(t) == model_only                 # …but is never the answer
    assert "```output" not in model_text(t) or pieces[0][1].startswith("```output")


def test_model_text_falls_back_to_the_fences_when_decoding_changed_the_block():
    """The decoded block may differ from format_tool_output(output) (e.g. a tokenizer's space cleanup): the first
    output fence span after the previous block is cut instead."""
    from zerotir.reward.extract import model_text, trajectory_answer

    t = _traj([("model", CODE), ("tool", "\\boxed{7}"), ("model", "Done.")])
    t.tool_calls[0].output = "\\boxed{7} "   # no longer the exact text in the response
    assert model_text(t) == CODE + "\nDone."
    assert trajectory_answer(t) is None


def test_sandbox_error_inserts_nothing_and_cuts_nothing():
    from zerotir.reward.extract import model_text
    from zerotir.types import Segment, ToolCall, Trajectory

    text = CODE + "\\boxed{4}"
    t = Trajectory(problem_id="p", prompt_ids=[0], response_ids=list(range(len(text))), loss_mask=[1] * len(text),
                   logprobs=[-0.1] * len(text), segments=[Segment("model", 0, len(text)), Segment("tool", len(text),
                   len(text))], tool_calls=[ToolCall(code="x", status="sandbox_error", output_segment=1)],
                   response_text=text)
    t.validate()
    assert model_text(t) == text
