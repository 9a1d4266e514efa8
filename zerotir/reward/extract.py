"""Final-answer extraction from a response: pure string functions, no math parsing.

    extract_answer("... so \\boxed{\\frac{1}{2}}.")              -> "\\frac{1}{2}"
    extract_answer("<answer>\\boxed{3}</answer>", "answer_tag")  -> "3"

'boxed': the content of the LAST \\boxed{...} (or \\fbox{...}) whose braces balance; nested braces are kept.
A box that never closes (a truncated response) does not count, so "... \\boxed{3} ... \\boxed{4" gives "3".
The brace-less form "\\boxed 5" (one token after a space) is read as "5". Empty boxes give None.
'answer_tag': the content of the last <answer>...</answer>; if it holds a box, that box's content. No closed tag
gives None (the stricter template format).
"""

from __future__ import annotations

import re

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
