"""Prompt templates: how a problem's text becomes the prompt the policy continues.

    build_prompt("zerotir", "What is 2+2?")            # the seed paper's plain-text template (base models)
    build_prompt("toy", "What is 2+2?")                # "Q: What is 2+2?\nA: " (the toy base is pretrained on it)
    build_prompt("chat", "What is 2+2?", tokenizer)    # the tokenizer's chat template (instruct models)
    build_prompt("chat_fewshot", "What is 2+2?", tok)  # chat + one worked example that runs code and boxes the answer
    build_prompt("chat_fewshot_tag", "What is 2+2?", tok)  # the same, the answer in <answer>…</answer>

`encode_prompt` returns (text, ids); the prompt is the only text the rollout ever encodes besides inserted tool
blocks — sampled tokens are never re-encoded.
"""

from __future__ import annotations

from typing import Any

INSTRUCTION = (
    "Solve the problem step by step. You can use python code to help: write it in a ```python\n...\n``` block; "
    "it is executed and its output is returned in a ```output\n...\n``` block. "
    "Put the final answer in \\boxed{}."
)
"""The instruction used by the 'chat' template (the same content as the 'zerotir' template)."""

ZEROTIR_TEMPLATE = (
    "A conversation between User and Assistant. The User asks a math question, and the Assistant solves it. "
    "The Assistant first thinks about the reasoning process in the mind and then provides the User with the answer. "
    "While reasoning, the Assistant can use python code to help: code written in a ```python\n...\n``` block is "
    "executed, and its output is returned in a ```output\n...\n``` block. "
    "The Assistant puts the final answer in \\boxed{{}}.\n"
    "User: {problem}\n"
    "Assistant: <think>"
)

TOY_TEMPLATE = "Q: {problem}\nA: "

FEWSHOT_QUESTION = "What is 37*52?"
"""The worked example's question in the few-shot chat templates (not a toy split prompt: those use other operands)."""

FEWSHOT_ANSWERS = {
    "chat_fewshot": "```python\nprint(37*52)\n```\n```output\n1924\n```\nThe answer is \\boxed{1924}.",
    "chat_fewshot_tag": "```python\nprint(37*52)\n```\n```output\n1924\n```\n<answer>1924</answer>",
}
"""The worked example's assistant turn: one code block, its output block (the exact rollout format), the answer.
Small instruct models (SmolLM2-135M) follow a shown example far more often than an instruction: with 'chat' alone
SmolLM2-135M never writes a \\boxed{} answer (issue 16); docs/real-models.md has the measured rates."""

TAG_INSTRUCTION = INSTRUCTION.replace("Put the final answer in \\boxed{}.", "Put the final answer in <answer></answer>.")
"""The 'chat_fewshot_tag' instruction: the answer goes in <answer>…</answer> (reward.answer_format 'answer_tag')."""

TEMPLATES = ("zerotir", "toy", "chat", "chat_fewshot", "chat_fewshot_tag")


def build_prompt(template: str, problem_text: str, tokenizer: Any = None) -> str:
    """The prompt text for one problem. 'chat' needs a tokenizer with a chat template."""
    if template == "zerotir":
        return ZEROTIR_TEMPLATE.format(problem=problem_text)
    if template == "toy":
        return TOY_TEMPLATE.format(problem=problem_text)
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("rollout.template 'chat' needs a tokenizer with a chat template "
                             "(this model has none; use 'zerotir' for base models)")
        messages = [{"role": "user", "content": f"{INSTRUCTION}\n\n{problem_text}"}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if template in FEWSHOT_ANSWERS:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"rollout.template '{template}' needs a tokenizer with a chat template "
                             "(this model has none; use 'zerotir' for base models)")
        instruction = TAG_INSTRUCTION if template == "chat_fewshot_tag" else INSTRUCTION
        messages = [{"role": "user", "content": f"{instruction}\n\n{FEWSHOT_QUESTION}"},
                    {"role": "assistant", "content": FEWSHOT_ANSWERS[template]},
                    {"role": "user", "content": problem_text}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise ValueError(f"unknown rollout.template '{template}' (choose one of {', '.join(TEMPLATES)})")


def encode_prompt(template: str, problem_text: str, tokenizer: Any) -> tuple[str, list[int]]:
    """(prompt text, prompt ids). Plain templates get the tokenizer's special tokens (e.g. BOS); a chat template
    already spells them out in its text."""
    text = build_prompt(template, problem_text, tokenizer)
    ids = tokenizer.encode(text, add_special_tokens=not template.startswith("chat"))
    return text, list(ids)
