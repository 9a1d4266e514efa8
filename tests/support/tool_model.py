"""A tiny model that has learned the tool-use format in seconds, for rollout tests and `bench/rollout.py`.

A random tiny model never closes a python block, so the tool path would go untested. `make_tool_model` trains the
tiny Qwen2 model of `zerotir.models.tiny` for a few hundred steps on documents in the 'toy' template:

    Q: What is 12*34?\\nA: Let me compute it.\\n```python\\nprint(12*34)\\n```\\n```output\\n408\\n```\\nSo the answer is \\boxed{408}.

(the output block is `format_tool_output`, exactly what the rollout inserts), so that sampling produces real code
blocks, tool calls and EOS, with realistic variety at temperature 1.
"""

from __future__ import annotations

import random
from pathlib import Path

from zerotir.rollout.format import CODE_CLOSE, CODE_OPEN, format_tool_output
from zerotir.rollout.templates import TOY_TEMPLATE


def tool_document(a: int, b: int, rng: random.Random) -> tuple[str, str]:
    """(problem, response) of one training document; some documents call the tool twice."""
    problem = f"What is {a}*{b}?"
    n = a * b
    first = f"Let me compute it.\n{CODE_OPEN}print({a}*{b}){CODE_CLOSE}{format_tool_output(str(n))}"
    if rng.random() < 0.3:
        first += f"Let me check.\n{CODE_OPEN}print({n}//{b}){CODE_CLOSE}{format_tool_output(str(n // b))}"
    return problem, f"{first}So the answer is \\boxed{{{n}}}."


def make_tool_model(out_dir: str | Path, steps: int = 300, seed: int = 0, log=None) -> Path:
    """Write the trained tiny model (+ tokenizer) to `out_dir` (reused if already there) and return the path."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zerotir.models.tiny import make_tiny_model

    out = Path(out_dir)
    if (out / "config.json").is_file() and (out / "trained.ok").is_file():
        return out
    make_tiny_model(out, hidden=64, layers=2, heads=4, seed=seed)
    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out))
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        docs = []
        for _ in range(16):
            p, r = tool_document(rng.randint(2, 99), rng.randint(2, 99), rng)
            docs.append(tok.encode(TOY_TEMPLATE.format(problem=p) + r) + [tok.eos_token_id])
        width = max(len(d) for d in docs)
        ids = torch.tensor([d + [tok.pad_token_id] * (width - len(d)) for d in docs])
        att = torch.tensor([[1] * len(d) + [0] * (width - len(d)) for d in docs])
        labels = ids.masked_fill(att == 0, -100)
        loss = model(input_ids=ids, attention_mask=att, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log and step % 50 == 0:
            log(f"step {step} loss {loss.item():.3f}")
    model.eval()
    model.save_pretrained(str(out))
    (out / "trained.ok").write_text(f"steps={steps}\n")
    return out
