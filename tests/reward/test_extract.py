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
