"""The text format of tool use, shared by the rollout (which parses and inserts it) and the toy corpus (which
teaches it). A response looks like:

    ...reasoning...
    ```python
    print(123 * 45)
    ```
    ```output
    5535
    ```
    So the answer is \\boxed{5535}.

The model samples everything up to and including the closing fence of the python block (CODE_CLOSE after a
CODE_OPEN); the rollout inserts `format_tool_output(text)` (mask 0) and generation continues.
"""

from __future__ import annotations

CODE_OPEN = "```python\n"
"""Opens a code block the sandbox will run."""
CODE_CLOSE = "\n```"
"""Closes the code block; sampling pauses right after it."""
OUTPUT_OPEN = "\n```output\n"
OUTPUT_CLOSE = "\n```\n"
TRUNCATION_MARKER = "...[output truncated]"
"""Appended (visibly) when tool output is cut to rollout.max_tool_output_tokens."""


def format_tool_output(output: str) -> str:
    """The inserted block for a tool result (trailing newlines of the output are folded into the fence)."""
    return f"{OUTPUT_OPEN}{output.rstrip(chr(10))}{OUTPUT_CLOSE}"


def extract_open_code(text: str) -> str | None:
    """If `text` ends with a completed python block (CODE_OPEN ... CODE_CLOSE), return its code, else None."""
    if not text.endswith(CODE_CLOSE):
        return None
    start = text.rfind(CODE_OPEN, 0, len(text) - len(CODE_CLOSE) + 1)
    if start < 0:
        return None
    code = text[start + len(CODE_OPEN): len(text) - len(CODE_CLOSE)]
    return code if "```" not in code else None
