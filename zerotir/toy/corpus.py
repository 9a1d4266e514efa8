"""The toy base model's pretraining corpus: what a tiny "base model" has read before RL.

Three kinds of documents, each ending with EOS:

  * Q/A with a text solution (most of the corpus), in the rollout's 'toy' template "Q: {problem}\\nA: ":
        Q: What is 1234*567?\\nA: 1234*567 = 699738. The answer is \\boxed{699738}.
    correct for easy (level-0) problems, plausibly wrong for hard ones (right length and leading digit, the rest
    guessed): a model cannot multiply in its head, and neither does its corpus.
  * framed code snippets, not tied to any question: "Compute X." + python block + output block + "So X = N."
    They teach copying numbers into code and the printed result back out, as a general skill.
  * a small, tunable share (`code_solution_share`, default 3%) of Q/A solutions that use code: the prior
    probability that the base model writes code for a question, small but not zero, as in real base models.

Code blocks use exactly the rollout's strings (zerotir.rollout.format): the model writes CODE_OPEN…CODE_CLOSE and the
output block is `format_tool_output(stdout)`, byte for byte what the rollout inserts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from zerotir.rollout.format import CODE_CLOSE, CODE_OPEN, format_tool_output
from zerotir.rollout.templates import TOY_TEMPLATE  # the one toy prompt: the corpus is pretrained on the rollout's
from zerotir.toy.tasks import DEFAULT_MIX, GENERATORS, Task, _reserved_prompts, reworded


@dataclass
class CorpusSpec:
    """What the corpus holds. Shares are of documents; `code_solution_share` is of Q/A documents."""

    n_docs: int = 80_000
    snippet_share: float = 0.25
    """Framed standalone code snippets (copying into and out of code)."""
    code_solution_share: float = 0.03
    """Q/A solutions that use code: the base model's prior for spontaneous tool use."""
    qa_levels: dict[int, float] = field(default_factory=lambda: {0: 0.45, 1: 0.45, 2: 0.10})
    """Difficulty mix of Q/A documents (level 0 solutions are correct, others guessed)."""
    snippet_levels: dict[int, float] = field(default_factory=lambda: {0: 0.2, 1: 0.5, 2: 0.3})
    """Difficulty mix of code snippets (long numbers make copying robust)."""
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    """Task kinds of the Q/A documents (see zerotir.toy.tasks.DEFAULT_MIX)."""
    snippet_mix: dict[str, float] | None = None
    """Task kinds of the code snippets; None: the same as `mix`. Under `mix` most snippets are multiplications
    (45%), and a base pretrained on them writes correct code for that kind only (docs/scaling.md); equal shares
    (`uniform_mix()`) give every kind the same code practice."""
    seed: int = 0
    wordings: str = "fixed"
    """'fixed': every Q/A question as the task asks it ('What is X?'); 'varied': each in one of
    zerotir.toy.tasks.TRAIN_WORDINGS, so copying the numbers does not hang on one phrasing; 'diverse': a lead-in
    times a phrasing (tasks.DIVERSE_WORDINGS × DIVERSE_LEADS, 140 ways), so the expression sits at many positions
    (the held-out tasks.WORDINGS never appear in any)."""


def plausible_wrong(answer: int, rng: random.Random) -> int:
    """A guess with the answer's length and leading digit, the rest random (it may rarely be right)."""
    s = str(abs(answer))
    if len(s) == 1:
        guess = rng.randint(0, 9)
    else:
        guess = int(s[0] + "".join(rng.choice("0123456789") for _ in s[1:]))
    return -guess if answer < 0 else guess


def intro(t: Task) -> str:
    """The sentence that frames a computation: 'Compute 12*34.' (or the equation itself for 'lin')."""
    return t.prompt if t.kind == "lin" else f"Compute {t.expr}."


def code_block(t: Task) -> str:
    """The python block as the model writes it, plus the output block exactly as the rollout inserts it."""
    return f"{CODE_OPEN}{t.code}{CODE_CLOSE}{format_tool_output(str(t.answer))}"


def text_solution(t: Task, rng: random.Random) -> str:
    n = t.answer if t.level == 0 else plausible_wrong(t.answer, rng)
    return f"{t.expr} = {n}. The answer is \\boxed{{{n}}}."


def code_solution(t: Task) -> str:
    return f"{intro(t)}\n{code_block(t)}So {t.expr} = {t.answer}. The answer is \\boxed{{{t.answer}}}."


def snippet(t: Task) -> str:
    return f"{intro(t)}\n{code_block(t)}So {t.expr} = {t.answer}."


def qa(t: Task, solution: str) -> str:
    return TOY_TEMPLATE.format(problem=t.prompt) + solution


def uniform_mix() -> dict[str, float]:
    """Every task kind at an equal share (for `CorpusSpec.snippet_mix`)."""
    return {kind: 1.0 / len(DEFAULT_MIX) for kind in DEFAULT_MIX}


def _draw(rng: random.Random, mix: dict[str, float], levels: dict[int, float], reserved: set[str]) -> Task:
    while True:
        kind = rng.choices(list(mix), weights=list(mix.values()))[0]
        level = rng.choices(list(levels), weights=list(levels.values()))[0]
        t = GENERATORS[kind](rng, level)
        if t.prompt not in reserved:  # never pretrain on an evaluation problem
            return t


def build_corpus(spec: CorpusSpec) -> list[str]:
    """The documents (without EOS), in a seeded order."""
    if spec.wordings not in ("fixed", "varied", "diverse"):
        raise ValueError(f"CorpusSpec.wordings: expected 'fixed', 'varied' or 'diverse', got {spec.wordings!r}")
    snippet_mix = spec.mix if spec.snippet_mix is None else spec.snippet_mix
    for name, mix in (("mix", spec.mix), ("snippet_mix", snippet_mix)):
        unknown = sorted(set(mix) - set(GENERATORS))
        if unknown or not mix or any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
            raise ValueError(f"CorpusSpec.{name}: expected task kinds from {sorted(GENERATORS)} with weights >= 0 "
                             f"and a positive sum, got {mix!r}")
    rng = random.Random(f"corpus-{spec.seed}")
    words = random.Random(f"corpus-wordings-{spec.seed}")  # its own stream: 'fixed' draws exactly as before
    reserved = _reserved_prompts()
    docs = []
    for _ in range(spec.n_docs):
        if rng.random() < spec.snippet_share:
            docs.append(snippet(_draw(rng, snippet_mix, spec.snippet_levels, reserved)))
            continue
        t = _draw(rng, spec.mix, spec.qa_levels, reserved)
        if spec.wordings != "fixed":
            t = reworded(t, words, spec.wordings)
        if rng.random() < spec.code_solution_share:
            docs.append(qa(t, code_solution(t)))
        else:
            docs.append(qa(t, text_solution(t, rng)))
    return docs


def corpus_stats(docs: list[str]) -> dict[str, float]:
    """Counts by document kind, and total characters."""
    qa_docs = [d for d in docs if d.startswith("Q: ")]
    with_code = sum(CODE_OPEN in d for d in qa_docs)
    return {"docs": len(docs), "chars": sum(len(d) + 1 for d in docs), "qa": len(qa_docs),
            "qa_with_code": with_code, "snippets": len(docs) - len(qa_docs),
            "code_solution_share": with_code / max(len(qa_docs), 1)}
