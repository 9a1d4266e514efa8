"""A small self-contained sampler to check a toy base model before RL (is there a signal to learn from?).

    stats = probe_base("zerotir/assets/toy-base", toy_problems("heldout"), temperature=1.0)
    # {'code_ratio': 0.05, 'accuracy': 0.12, 'code_attempt_accuracy': 0.5, ...}

It samples responses in the 'toy' template, pauses each one when it closes a python block, runs the code in a
subprocess with a timeout (no isolation: it only runs our own base model's code, in checks), inserts
`format_tool_output(stdout)` and continues. The answer is the last \\boxed{} checked by math-verify. RL and eval use
the project's rollout, sandbox and reward; this exists so the base can be checked with nothing but the model.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from zerotir.rollout.format import CODE_OPEN, extract_open_code, format_tool_output
from zerotir.toy.corpus import TOY_TEMPLATE
from zerotir.types import Problem


@dataclass
class ProbeSample:
    problem: Problem
    response: str
    code_calls: int
    answer: str | None
    correct: bool


def run_code(code: str, timeout_s: float = 2.0) -> str:
    """stdout (or the error's last line) of `code` run in a fresh interpreter; never raises."""
    try:
        r = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return "TimeoutError"
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        return lines[-1] if lines else f"exit code {r.returncode}"
    return r.stdout


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (balanced braces), or None."""
    i = text.rfind("\\boxed{")
    if i < 0:
        return None
    depth, j = 1, i + len("\\boxed{")
    start = j
    while j < len(text):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[start:j]
        j += 1
    return None


def is_correct(answer: str | None, gold: str) -> bool:
    if answer is None:
        return False
    if answer.strip() == gold.strip():
        return True
    try:
        from math_verify import parse, verify

        return bool(verify(parse(f"${gold}$"), parse(f"\\boxed{{{answer}}}")))
    except Exception:  # a malformed answer is simply wrong
        return False


def _sample_phase(model, tok, texts: list[str], max_new: int, temperature: float, gen) -> list[tuple[str, str]]:
    """Continue each text until EOS, a closed python block, or `max_new` tokens.
    Returns (new text, reason) per input; reason is 'eos', 'code' or 'length'."""
    import torch

    vocab = tok.get_vocab()
    unk = vocab["<unk>"]
    ids = [[vocab.get(c, unk) for c in t] for t in texts]
    n, width = len(ids), max(len(x) for x in ids)
    inp = torch.full((n, width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, x in enumerate(ids):
        inp[i, width - len(x):] = torch.tensor(x)
        mask[i, width - len(x):] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    id_to_tok = {v: k for k, v in vocab.items()}
    new = [""] * n
    reason = [""] * n
    with torch.no_grad():
        out = model(input_ids=inp, attention_mask=mask, position_ids=pos, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1]
        last_pos = pos[:, -1]
        for _ in range(max_new):
            probs = torch.softmax(logits / max(temperature, 1e-6), dim=-1) if temperature > 0 else None
            nxt = (torch.multinomial(probs, 1, generator=gen)[:, 0] if probs is not None else logits.argmax(-1))
            for i in range(n):
                if reason[i]:
                    continue
                t = int(nxt[i])
                if t == tok.eos_token_id:
                    reason[i] = "eos"
                    continue
                new[i] += id_to_tok.get(t, "")
                if CODE_OPEN in texts[i] + new[i] and extract_open_code(texts[i] + new[i]) is not None:
                    reason[i] = "code"
            if all(reason):
                break
            mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long)], 1)
            last_pos = last_pos + 1
            out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=last_pos[:, None],
                        past_key_values=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[:, -1]
    return [(new[i], reason[i] or "length") for i in range(n)]


def probe_samples(model, tok, problems: list[Problem], *, temperature: float = 1.0, max_tokens: int = 192,
                  max_tool_calls: int = 2, batch: int = 128, seed: int = 0) -> list[ProbeSample]:
    """One sampled tool-integrated response per problem."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out: list[ProbeSample] = []
    for b in range(0, len(problems), batch):
        probs = problems[b:b + batch]
        prompts = [TOY_TEMPLATE.format(problem=p.prompt) for p in probs]
        resp, calls, live = [""] * len(probs), [0] * len(probs), list(range(len(probs)))
        while live:
            budgets = [max_tokens - len(resp[i]) for i in live]
            res = _sample_phase(model, tok, [prompts[i] + resp[i] for i in live], max(budgets), temperature, gen)
            nxt_live, to_run = [], []
            for i, budget, (txt, why) in zip(live, budgets, res):
                resp[i] += txt[:budget]
                if why == "code" and len(txt) <= budget and calls[i] < max_tool_calls:
                    to_run.append(i)
            with ThreadPoolExecutor(2) as ex:
                outputs = list(ex.map(lambda i: run_code(extract_open_code(resp[i]) or ""), to_run))
            for i, o in zip(to_run, outputs):
                calls[i] += 1
                resp[i] += format_tool_output(o[:200])
                if len(resp[i]) < max_tokens:
                    nxt_live.append(i)
            live = nxt_live
        for p, r, c in zip(probs, resp, calls):
            ans = last_boxed(r)
            out.append(ProbeSample(p, r, c, ans, is_correct(ans, p.answer)))
    return out


def summarize(samples: list[ProbeSample]) -> dict[str, float]:
    """code_ratio, accuracy, code_attempt_accuracy (accuracy among responses that ran code), text accuracy."""
    n = max(len(samples), 1)
    code = [s for s in samples if s.code_calls > 0]
    text = [s for s in samples if s.code_calls == 0]
    return {"n": len(samples), "code_ratio": len(code) / n, "accuracy": sum(s.correct for s in samples) / n,
            "code_attempt_accuracy": sum(s.correct for s in code) / max(len(code), 1),
            "text_accuracy": sum(s.correct for s in text) / max(len(text), 1), "code_responses": len(code),
            "mean_chars": sum(len(s.response) for s in samples) / n}


def probe_base(model_dir: str, problems: list[Problem], **kw) -> tuple[dict[str, float], list[ProbeSample]]:
    from zerotir.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(model_dir, device="cpu")
    samples = probe_samples(model, tok, problems, **kw)
    return summarize(samples), samples
