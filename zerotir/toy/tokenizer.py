"""The toy model's character-level tokenizer, built with `tokenizers` and saved as an ordinary HF tokenizer.

One token per printable ASCII character plus newline (byte-level spelling, see `build_char_tokenizer`), and three specials: <|endoftext|> (EOS, id 0), <|pad|> (1),
<unk> (2, any other character). Characters make copying numbers into code and back a position-by-position skill,
and make the rollout's token counts equal to character counts (easy to read in transcripts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPECIALS = ("<|endoftext|>", "<|pad|>", "<unk>")
CHARS = tuple(chr(i) for i in range(32, 127)) + ("\n",)


BYTE_LEVEL = {" ": "\u0120", "\n": "\u010a"}
"""Byte-level spellings (GPT-2's byte→unicode map) of the two characters it does not map to themselves."""


def char_vocab() -> dict[str, int]:
    """Token → id: the specials first, then the characters in CHARS order, spelled the byte-level way
    ('Ġ' for space, 'Ċ' for newline)."""
    return {BYTE_LEVEL.get(t, t): i for i, t in enumerate(SPECIALS + CHARS)}


def char_id_map() -> dict[str, int]:
    """Character → id (plain characters, for building the training stream without the tokenizer)."""
    return {t: i for i, t in enumerate(SPECIALS + CHARS)}


def build_char_tokenizer(out_dir: str | Path | None = None) -> Any:
    """A PreTrainedTokenizerFast over `char_vocab()` (saved to `out_dir` when given)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # Byte-level BPE with no merges: every character is one token. Byte-level, because transformers rebuilds the
    # tokenizer of some model types (qwen2, which the toy base's config is) as byte-level BPE from the saved vocab;
    # this spelling makes that rebuild and tokenizer.json agree token for token.
    tok = Tokenizer(models.BPE(vocab=char_vocab(), merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIALS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=SPECIALS[0], pad_token=SPECIALS[1],
                                   unk_token=SPECIALS[2], bos_token=None, clean_up_tokenization_spaces=False)
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast
