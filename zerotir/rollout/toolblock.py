"""What the model sees of a tool call: the rendered result, tokenized on its own as an output block (cut by tokens
with a visible marker). Used by `tir.py` (which re-exports these names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zerotir.rollout.format import TRUNCATION_MARKER, format_tool_output
from zerotir.types import ExecResult


def render_result(r: ExecResult) -> str:
    """What the model sees for an executed call (never called for 'sandbox_error')."""
    text = r.stdout
    if r.status != "ok" and r.stderr:
        text += ("" if not text or text.endswith("\n") else "\n") + r.stderr
    sep = "" if not text or text.endswith("\n") else "\n"
    if r.status == "timeout":
        text += sep + "TimeoutError: execution timed out"
    elif r.status == "oom":
        text += sep + "MemoryError: out of memory"
    elif r.status == "killed":
        text += sep + f"Killed (signal {r.signal})" if r.signal is not None else sep + "Killed"
    return text


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """`tokenizer.encode(text, add_special_tokens=False)`; fast tokenizers via their Rust backend directly (the same
    ids without the Python wrapper, which costs more than the encoding of a short tool output)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.encode(text, add_special_tokens=False).ids
    return list(tokenizer.encode(text, add_special_tokens=False))


def min_block_tokens(tokenizer: Any) -> int:
    """Tokens of the smallest output block (the truncation marker alone): with less room left, code is not run."""
    return len(encode_text(tokenizer, format_tool_output(TRUNCATION_MARKER)))


@dataclass
class Block:
    ids: list[int]
    """Token ids of the whole inserted block (OUTPUT_OPEN … OUTPUT_CLOSE)."""
    shown: str
    """The output text inside the block (after truncation, with the marker if cut)."""
    truncated: bool


def tokenize_block(tokenizer: Any, output: str, max_output_tokens: int, max_block_tokens: int,
                   force_marker: bool = False) -> Block | None:
    """Tokenize `format_tool_output(shown)` on its own, where `shown` is `output` cut so that its own tokens (marker
    included) are at most `max_output_tokens` and the whole block is at most `max_block_tokens`. When cut (or
    `force_marker`, e.g. the sandbox already capped the bytes) `shown` ends with TRUNCATION_MARKER.
    Returns None when even a block holding only the marker does not fit `max_block_tokens`."""
    shown = output.rstrip("\n")
    if not force_marker:
        ids = encode_text(tokenizer, shown)
        if len(ids) <= max_output_tokens:
            block = encode_text(tokenizer, format_tool_output(shown))
            if len(block) <= max_block_tokens:
                return Block(block, shown, False)
    ids = encode_text(tokenizer, shown)
    k = min(len(ids), max_output_tokens)
    while True:
        # decode(ids[:k]) may end in half a character: drop it rather than show a replacement char
        cut = tokenizer.decode(ids[:k], skip_special_tokens=True).rstrip("\ufffd") if k > 0 else ""
        cand = cut + TRUNCATION_MARKER
        n_out = len(encode_text(tokenizer, cand))
        block = encode_text(tokenizer, format_tool_output(cand))
        over = max(n_out - max_output_tokens, len(block) - max_block_tokens)
        if over <= 0:
            return Block(block, cand.rstrip("\n"), True)
        if k == 0:
            return None
        k = max(0, k - over)


def marker_tokens(tokenizer: Any) -> int:
    return len(encode_text(tokenizer, TRUNCATION_MARKER))
