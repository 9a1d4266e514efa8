"""Final-answer extraction from a response: pure string functions, no math parsing.

    extract_answer("... so \\boxed{\\frac{1}{2}}.")              -> "\\frac{1}{2}"
    extract_answer("<answer>\\boxed{3}</answer>", "answer_tag")  -> "3"

'boxed': the content of the LAST \\boxed{...} (or \\fbox{...}) whose braces balance; nested braces are kept.
A box that never closes (a truncated response) does not count, so "... \\boxed{3} ... \\boxed{4" gives "3".
The brace-less form "\\boxed 5" (one token after a space) is read as "5". Empty boxes give None.
'answer_tag': the content of the last <answer>...</answer>; if it holds a box, that box's content. No closed tag
gives None (the stricter template format).

Whose text is graded: the MODEL's own text only. `trajectory_answer(traj, fmt)` (what the reward uses) extracts from
`model_text(traj)`: the response with every block the rollout inserted (tool output, budget messages; the
trajectory's 'tool' segments, each `rollout.format.format_tool_output(call.output)`) cut out. So a \\boxed{} that the
code printed does not count unless the model writes an answer itself after reading it; the paper grades the model's
answer, and an answer copied from a tool block would reward code that merely prints a box. Everything the model
wrote is its text and counts, code included: an output block it wrote itself (never run), or a box typed literally
inside its code; a box the code computes appears only in the inserted block and does not.
"""

from __future__ import annotations

import re
from typing import Any

from zerotir.rollout.format import OUTPUT_CLOSE, OUTPUT_OPEN, format_tool_output

ANSWER_FORMATS: tuple[str, ...] = ("boxed", "answer_tag")
_BOX = re.compile(r"\\(?:boxed|fbox)\b")
_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _matching_braces(text: str) -> dict[int, int]:
    """Index of each "{" → index of its closing "}" (unclosed ones absent), in one linear pass.
    A backslash escapes the next character: \\{ and \\} are content, \\\\ is a line break."""
    match: dict[int, int] = {}
    stack: list[int] = []
    j, n = 0, len(text)
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "{":
            stack.append(j)
        elif c == "}" and stack:
            match[stack.pop()] = j
        j += 1
    return match


def last_boxed(text: str) -> str | None:
    """Content of the last complete \\boxed{} / \\fbox{} in `text`, stripped; None when there is none."""
    match: dict[int, int] | None = None
    for m in reversed(list(_BOX.finditer(text))):
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            match = _matching_braces(text) if match is None else match
            if i in match and text[i + 1:match[i]].strip():
                return text[i + 1:match[i]].strip()
        elif i > m.end():          # "\\boxed 5": one whitespace-delimited token
            tok = re.match(r"[^\s$]+", text[i:])
            if tok and tok.group(0).rstrip(".,;"):
                return tok.group(0).rstrip(".,;")
    return None


def extract_answer(text: str, fmt: str = "boxed") -> str | None:
    """The final answer of a response in format `fmt` ('boxed' or 'answer_tag'); None when there is none."""
    if not text:
        return None
    if fmt == "boxed":
        return last_boxed(text)
    if fmt == "answer_tag":
        tags = _TAG.findall(text)
        if not tags:
            return None
        inner = tags[-1]
        boxed = last_boxed(inner)
        if boxed is not None:
            return boxed
        inner = inner.strip().strip("$").strip()
        return inner or None
    raise ValueError(f"unknown answer format {fmt!r} (reward.answer_format): expected one of {ANSWER_FORMATS}")


def model_text(traj: Any) -> str:
    """`traj.response_text` without the blocks the rollout inserted (a `types.Trajectory`, or any object with
    `response_text` and `tool_calls`). Each call with an inserted block (`output_segment` set, `output_tokens` > 0)
    is found in order after the previous one and replaced by a newline (text on either side stays apart).

    The block's exact text is `format_tool_output(call.output)`; should decoding have altered it, the first
    OUTPUT_OPEN … OUTPUT_CLOSE span after the previous block is cut instead."""
    text = traj.response_text or ""
    parts: list[str] = []
    pos = 0
    for call in traj.tool_calls:
        if call.output_segment is None or not call.output_tokens:
            continue  # nothing was inserted (a skipped call without a message, a sandbox error)
        block = format_tool_output(call.output)
        start = text.find(block, pos)
        if start >= 0:
            end = start + len(block)
        else:
            start = text.find(OUTPUT_OPEN, pos)
            if start < 0:
                break
            close = text.find(OUTPUT_CLOSE, start + len(OUTPUT_OPEN))
            end = len(text) if close < 0 else close + len(OUTPUT_CLOSE)
        parts += [text[pos:start], "\n"]
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def trajectory_answer(traj: Any, fmt: str = "boxed") -> str | None:
    """The final answer of a trajectory: `extract_answer` on the model's own text (`model_text`), never on tool
    output."""
    return extract_answer(model_text(traj), fmt)
