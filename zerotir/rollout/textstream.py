"""Incremental text of a token stream, and stop detection on it (stop strings, the end of a python block).

Engines use these to decide when to stop; the text is never turned back into tokens.
"""

from __future__ import annotations

from typing import Any

from zerotir.rollout.format import CODE_CLOSE, CODE_OPEN


def fast_decoder(tokenizer: Any):
    """ids -> text, as `tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)`.
    Fast (Rust-backed) tokenizers are called directly: the same text without the Python wrapper, which costs more
    than the decode itself at one call per generated token."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return lambda ids: backend.decode(ids, skip_special_tokens=False)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


class IncrementalDetokenizer:
    """Text of the tokens appended so far, computed in O(1) decodes per token (the prefix/read-offset scheme).

    `context_tail` (the last few context ids) lets tokenizers that render a token differently at the start of a text
    (sentencepiece's leading space) produce the same text as in the full sequence; the tail's own text is excluded.
    Text ending in an incomplete UTF-8 sequence is held back until the next token completes it.
    """

    def __init__(self, tokenizer: Any, context_tail: list[int] | None = None, decode=None):
        self._decode = decode or fast_decoder(tokenizer)
        self.ids: list[int] = list(context_tail or [])
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.text = ""

    def add(self, token_id: int) -> str:
        """Append a token; return the newly completed text (possibly '')."""
        self.ids.append(int(token_id))
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        full = self._decode(self.ids[self.prefix_offset:])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            delta = full[len(prefix):]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            self.text += delta
            return delta
        return ""


def find_code_block(text: str) -> tuple[str, int] | None:
    """The first completed python block in `text`: (code, index just past its CODE_CLOSE), or None.

    The block opens at the first CODE_OPEN and closes at the first CODE_CLOSE after it (the newline ending CODE_OPEN
    may also start CODE_CLOSE, so an empty block is allowed), matching `format.extract_open_code` on a text that ends
    right after the fence.
    """
    i = text.find(CODE_OPEN)
    if i < 0:
        return None
    body = i + len(CODE_OPEN)
    j = text.find(CODE_CLOSE, body - 1)
    if j < 0:
        return None
    return text[body:max(j, body)], j + len(CODE_CLOSE)


class StopMatcher:
    """Detects, token by token, the first completed stop string or (if `code_block`) the end of a python block.

    Call `feed(text_so_far)` after each token; it returns the stop string that the newest text completed (CODE_CLOSE
    for a python block), or None. Work per call is proportional to the new text, not the whole text.
    """

    def __init__(self, stop_strings: list[str], code_block: bool = False):
        self.stops = [s for s in stop_strings if s]
        self.code_block = code_block
        self.longest = max([len(s) for s in self.stops] + [len(CODE_OPEN), len(CODE_CLOSE)])
        self.scanned = 0
        """Length of the text already examined."""
        self.open_body: int | None = None
        """Index just past the CODE_OPEN of the currently open block."""

    def feed(self, text: str) -> str | None:
        lo = max(0, self.scanned - self.longest + 1)
        self.scanned = len(text)
        for s in self.stops:
            if text.find(s, lo) >= 0:
                return s
        if self.code_block:
            if self.open_body is None:
                i = text.find(CODE_OPEN, lo)
                if i < 0:
                    return None
                self.open_body = i + len(CODE_OPEN)
            if text.find(CODE_CLOSE, max(self.open_body - 1, lo)) >= 0:
                return CODE_CLOSE
        return None
