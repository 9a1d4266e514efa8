"""A tiny randomly initialised HF model + tokenizer, saved as an ordinary model directory.

For tests and benchmarks that need a real model quickly (no download). Byte-level BPE tokenizer trained on a few
lines of math/code text; Qwen2-style architecture.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "Question: What is 12 * 34? Let me compute it with python.\n```python\nprint(12 * 34)\n```\n```output\n408\n```\n"
    "So the answer is \\boxed{408}.",
    "The sum of the numbers 1, 2, 3 is 6. Answer: \\boxed{6}. We use sympy: import sympy; sympy.factorint(360)",
    "def f(x):\n    return x ** 2 + 3 * x - 7\nfor i in range(10):\n    print(i, f(i))",
    "Solve for x: 3x + 5 = 20. Subtract 5, divide by 3: x = 5. <think> reasoning </think> <answer> 5 </answer>",
]


def build_tokenizer(out_dir: str | Path, vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>",
                                   bos_token=None)
    fast.save_pretrained(str(out_dir))
    return fast


def make_tiny_model(out_dir: str | Path, *, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0,
                    max_positions: int = 2048) -> Path:
    """Write a tiny Qwen2-style causal LM (+ tokenizer) to `out_dir` and return the path."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_positions,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=None)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(str(out))
    return out
