"""Prompt templates: how a problem's text becomes the prompt the policy continues.

    build_prompt("zerotir", "What is 2+2?")            # the seed paper's plain-text template (base models)
    build_prompt("toy", "What is 2+2?")                # "Q: What is 2+2?\nA: " (the toy base is pretrained on it)
    build_prompt("chat", "What is 2+2?", tokenizer)    # the tokenizer's chat template (instruct models)

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

TEMPLATES = ("zerotir", "toy", "chat")


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
    raise ValueError(f"unknown rollout.template '{template}' (choose one of {', '.join(TEMPLATES)})")


def encode_prompt(template: str, problem_text: str, tokenizer: Any) -> tuple[str, list[int]]:
    """(prompt text, prompt ids). Plain templates get the tokenizer's special tokens (e.g. BOS); a chat template
    already spells them out in its text."""
    text = build_prompt(template, problem_text, tokenizer)
    ids = tokenizer.encode(text, add_special_tokens=template != "chat")
    return text, list(ids)
