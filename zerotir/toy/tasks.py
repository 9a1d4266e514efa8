"""Procedural toy tasks whose answers need exact computation: easy ones a tiny model can do in its head, hard ones
it can only get right by writing code.

    toy_problems("train")     # 20,000 procedural problems (seeded), the default difficulty mix
    toy_problems("heldout")   # 256 fixed problems, disjoint from every train split
    toy_problems("easy") / toy_problems("hard")   # 256 fixed problems at level 0 / level 1
    toy_problems("rg-gcd")    # 256 problems from a reasoning-gym generator (longer prompts, for bigger models)
    toy_problems("ood-wording") / toy_problems("ood-size")   # 256 fixed problems outside the training distribution
    toy_problems("train-varied")  # train's problems, each in one of TRAIN_WORDINGS (the opt-in varied curriculum)

The two `ood-` splits ask whether RL taught the tool or one template. `ood-wording`: level-1 operands (as in
training) under phrasings that neither RL training nor the pretraining corpus contains (`WORDINGS`: "Calculate X.",
"Find the value of X.", ...; the corpus frames its snippets with "Compute X.", so that verb is not used).
`ood-size`: the training wording with level-2 operands, kept only where the prompt is longer than any level-1
prompt of its kind (`level1_prompt_len`), so every problem has more digits than any RL training problem (the
pretraining corpus does show level-2 numbers, in snippets and guessed Q/A: copying long numbers is its job).

Every Problem carries in `meta`: kind, level, `expr` (how the worked solution writes the computation, e.g.
"1234*567" or "gcd(84, 126)") and `code` (the canonical Python that prints the answer). The corpus builds its
text solutions and code snippets from these, so the task and the code that solves it have one source of truth.
Gold answers are plain integers, which math-verify compares exactly.

Prompts are short on purpose: the toy model reads characters, and every prompt character is one more thing to copy.
Our own generators are used for that reason; reasoning-gym's phrasing is available through the 'rg-<name>' splits.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

from zerotir.data import register_source
from zerotir.types import Problem


@dataclass
class Task:
    """One generated problem before it becomes a Problem: prompt text, integer answer, solution forms."""

    kind: str
    level: int
    prompt: str
    answer: int
    expr: str
    code: str


def _digits(rng: random.Random, lo: int, hi: int) -> int:
    """A random integer with between lo and hi decimal digits."""
    n = rng.randint(lo, hi)
    return rng.randint(10 ** (n - 1) if n > 1 else 0, 10 ** n - 1)


def _mul(rng: random.Random, level: int) -> Task:
    if level == 0:
        a, b = _digits(rng, 1, 2), _digits(rng, 1, 1)
    elif level == 1:
        a, b = _digits(rng, 3, 4), _digits(rng, 2, 3)
    else:
        a, b = _digits(rng, 4, 5), _digits(rng, 3, 4)
    e = f"{a}*{b}"
    return Task("mul", level, f"What is {e}?", a * b, e, f"print({e})")


def _add(rng: random.Random, level: int) -> Task:
    n, lo, hi = [(2, 1, 2), (3, 4, 4), (4, 4, 5)][min(level, 2)]
    xs = [_digits(rng, lo, hi) for _ in range(n)]
    e = "+".join(map(str, xs))
    return Task("add", level, f"What is {e}?", sum(xs), e, f"print({e})")


def _mod(rng: random.Random, level: int) -> Task:
    if level == 0:
        a, m = rng.randint(10, 60), rng.randint(2, 9)
    elif level == 1:
        a, m = _digits(rng, 5, 6), rng.randint(11, 999)
    else:
        a, m = _digits(rng, 7, 9), rng.randint(101, 9999)
    e = f"{a} mod {m}"
    return Task("mod", level, f"What is {e}?", a % m, e, f"print({a} % {m})")


def _pow(rng: random.Random, level: int) -> Task:
    if level == 0:
        a, b = rng.randint(2, 5), rng.randint(2, 3)
    elif level == 1:
        a, b = rng.randint(2, 9), rng.randint(7, 15)
    else:
        a, b = rng.randint(11, 99), rng.randint(5, 9)
    e = f"{a}^{b}"
    return Task("pow", level, f"What is {e}?", a ** b, e, f"print({a}**{b})")


def _gcd_pair(rng: random.Random, level: int) -> tuple[int, int]:
    if level == 0:
        g = rng.randint(2, 6)
        x, y = rng.sample(range(1, 8), 2)
    else:
        g = rng.randint(3, 99)
        x, y = rng.sample(range(11, 999 if level == 1 else 9999), 2)
    return g * x, g * y


def _gcd(rng: random.Random, level: int) -> Task:
    a, b = _gcd_pair(rng, level)
    e = f"gcd({a}, {b})"
    return Task("gcd", level, f"What is {e}?", math.gcd(a, b), e, f"import math\nprint(math.gcd({a}, {b}))")


def _lcm(rng: random.Random, level: int) -> Task:
    if level == 0:
        a, b = rng.sample(range(2, 13), 2)
    else:
        a, b = _gcd_pair(rng, 1)
    e = f"lcm({a}, {b})"
    return Task("lcm", level, f"What is {e}?", math.lcm(a, b), e, f"import math\nprint(math.lcm({a}, {b}))")


def _binom(rng: random.Random, level: int) -> Task:
    n = rng.randint(4, 7) if level == 0 else rng.randint(15, 30 if level == 1 else 60)
    k = rng.randint(1, 2) if level == 0 else rng.randint(3, n // 2)
    e = f"C({n}, {k})"
    return Task("binom", level, f"What is {e}?", math.comb(n, k), e, f"import math\nprint(math.comb({n}, {k}))")


def _lin(rng: random.Random, level: int) -> Task:
    """a*x + b = c with integer solution x."""
    if level == 0:
        a, x, b = rng.randint(2, 9), rng.randint(1, 9), rng.randint(1, 20)
    elif level == 1:
        a, x, b = rng.randint(12, 999), rng.randint(11, 999), _digits(rng, 3, 4)
    else:
        a, x, b = _digits(rng, 3, 4), _digits(rng, 3, 4), _digits(rng, 5, 6)
    c = a * x + b
    return Task("lin", level, f"Solve {a}*x + {b} = {c} for x.", x, "x", f"print(({c} - {b}) // {a})")


def _base(rng: random.Random, level: int) -> Task:
    bits = rng.randint(3, 5) if level == 0 else rng.randint(11, 16 if level == 1 else 24)
    n = rng.randint(2 ** (bits - 1), 2 ** bits - 1)
    s = format(n, "b")
    e = f"0b{s}"
    return Task("base", level, f"What is binary {s} in decimal?", n, e, f"print(int('{s}', 2))")


GENERATORS: dict[str, Callable[[random.Random, int], Task]] = {
    "mul": _mul, "add": _add, "mod": _mod, "pow": _pow, "gcd": _gcd, "lcm": _lcm, "binom": _binom, "lin": _lin,
    "base": _base,
}
"""Task kinds by name; each takes (rng, level) with level 0 = easy (doable in the head), 1 = hard, 2 = harder."""

DEFAULT_MIX: dict[str, float] = {
    "mul": 0.45, "add": 0.15, "mod": 0.07, "pow": 0.06, "gcd": 0.06, "lcm": 0.05, "binom": 0.05, "lin": 0.06,
    "base": 0.05,
}
"""Share of each kind in the train/heldout splits: multiplication dominates (the cleanest copy-into-code task)."""

EASY_SHARE = 0.15
"""Share of level-0 problems in train/heldout: text alone solves them, so the no-tools baseline is not zero."""

HELDOUT_SEED = 10_007
SPLIT_SIZES = {"train": 20_000, "heldout": 256, "easy": 256, "hard": 256, "ood-wording": 256, "ood-size": 256}

WORDINGS: tuple[str, ...] = ("Calculate {e}.", "Find the value of {e}.", "Evaluate {e}.", "{e} = ?",
                             "Work out {e}.")
"""Held-out phrasings of 'What is {e}?' (never in train, heldout or the pretraining corpus), for `ood-wording`."""
LIN_WORDINGS: tuple[str, ...] = ("Find x if {eq}.", "{eq}. What is x?", "Which x satisfies {eq}?")
BASE_WORDINGS: tuple[str, ...] = ("Convert binary {s} to decimal.", "Binary {s} is which decimal number?")


TRAIN_WORDINGS: tuple[str, ...] = ("What is {e}?", "Compute {e}.", "How much is {e}?", "What does {e} equal?",
                                   "Give {e}.", "Tell me {e}.")
"""Phrasings of the opt-in varied curriculum (`train-varied`, CorpusSpec.wordings='varied'); disjoint from
WORDINGS, which stay held out."""
TRAIN_LIN_WORDINGS: tuple[str, ...] = ("Solve {eq} for x.", "If {eq}, what is x?", "Get x from {eq}.")
TRAIN_BASE_WORDINGS: tuple[str, ...] = ("What is binary {s} in decimal?", "Read binary {s} as a decimal number.")


DIVERSE_WORDINGS: tuple[str, ...] = TRAIN_WORDINGS + (
    "Determine {e}.", "What do you get for {e}?", "{e} is what?", "Report {e}.", "I need {e}.", "What's {e}?",
    "Give the result of {e}.", "Say what {e} is.")
DIVERSE_LEADS: tuple[str, ...] = ("", "Please, ", "Now, ", "Question: ", "Next: ", "One more: ", "Try this: ",
                                  "Quick one: ", "Here is a task. ", "Help me out. ")
"""The diverse curriculum (`train-diverse`, CorpusSpec.wordings='diverse'): a lead-in times a phrasing, 140 ways to
ask 'What is X?' that put the expression at many positions (lin and base: their training phrasings with the same
lead-ins); disjoint from WORDINGS, which stay held out."""

WORDING_SETS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "held-out": (WORDINGS, LIN_WORDINGS, BASE_WORDINGS, ("",)),
    "varied": (TRAIN_WORDINGS, TRAIN_LIN_WORDINGS, TRAIN_BASE_WORDINGS, ("",)),
    "diverse": (DIVERSE_WORDINGS, TRAIN_LIN_WORDINGS, TRAIN_BASE_WORDINGS, DIVERSE_LEADS),
}
"""name → (phrasings of 'What is {e}?', of lin's 'Solve {eq} for x.', of base's question, lead-ins)."""


def _lead(lead: str, question: str) -> str:
    """'Please, ' + 'What is 3*4?' → 'Please, what is 3*4?' (after a comma the phrasing goes on in lower case)."""
    if lead.endswith(", ") and question[:1].isupper() and not question.startswith("I "):
        question = question[0].lower() + question[1:]
    return lead + question


def reworded(t: Task, rng: random.Random, wordings: str = "held-out") -> Task:
    """The same task (answer, expr, code) asked in a phrasing of WORDING_SETS[wordings]: 'held-out' (WORDINGS …,
    for `ood-wording`), or a training curriculum's ('varied', 'diverse'; the original phrasing among them)."""
    if wordings not in WORDING_SETS:
        raise ValueError(f"wordings: expected one of {sorted(WORDING_SETS)}, got {wordings!r}")
    plain, lin, base, leads = WORDING_SETS[wordings]
    lead = rng.choice(leads) if len(leads) > 1 else leads[0]  # one-lead sets draw exactly as before
    if t.kind == "lin":
        eq = t.prompt[len("Solve "):-len(" for x.")]
        prompt = rng.choice(lin).format(eq=eq)
    elif t.kind == "base":
        prompt = rng.choice(base).format(s=t.expr[2:])
    else:
        prompt = rng.choice(plain).format(e=t.prompt[len("What is "):-1])
    return Task(t.kind, t.level, _lead(lead, prompt), t.answer, t.expr, t.code)


def sample_task(rng: random.Random, mix: dict[str, float] | None = None, easy_share: float = EASY_SHARE,
                level: int | None = None) -> Task:
    """One task: kind drawn from `mix`, level 0 with probability `easy_share` else 1 (or the given level)."""
    mix = mix or DEFAULT_MIX
    kind = rng.choices(list(mix), weights=list(mix.values()))[0]
    lvl = level if level is not None else (0 if rng.random() < easy_share else 1)
    return GENERATORS[kind](rng, lvl)


def _to_problem(t: Task, split: str, i: int) -> Problem:
    return Problem(id=f"toy-{split}-{i}", prompt=t.prompt, answer=str(t.answer), source=f"toy:{split}",
                   meta={"kind": t.kind, "level": t.level, "expr": t.expr, "code": t.code})


def _fixed_tasks(split: str, n: int, level: int | None) -> list[Task]:
    rng = random.Random(f"{HELDOUT_SEED}-{split}")
    seen: set[str] = set()
    out: list[Task] = []
    while len(out) < n:
        t = sample_task(rng, level=level)
        if t.prompt not in seen:
            seen.add(t.prompt)
            out.append(t)
    return out


def _reserved_prompts() -> set[str]:
    """Prompts of every fixed evaluation split; train never contains them."""
    return {t.prompt for s, lvl in (("heldout", None), ("easy", 0), ("hard", 1))
            for t in _fixed_tasks(s, SPLIT_SIZES[s], lvl)}


def level1_prompt_len(samples: int = 5000) -> dict[str, int]:
    """The longest level-1 prompt of each kind among `samples` seeded draws (level 1 is what train and heldout use,
    besides level 0): a level-2 prompt longer than this has operands larger than training's."""
    rng = random.Random(f"{HELDOUT_SEED}-level1-range")
    return {kind: max(len(gen(rng, 1).prompt) for _ in range(samples)) for kind, gen in GENERATORS.items()}


def _rg_problems(name: str, n: int, seed: int) -> list[Problem]:
    try:
        import reasoning_gym
    except ImportError:  # pragma: no cover - it is a core dependency
        raise ValueError("toy split 'rg-…' needs the reasoning-gym package") from None
    try:
        ds = reasoning_gym.create_dataset(name, size=n, seed=seed)
    except Exception as e:  # unknown name or bad options: one clear line
        raise ValueError(f"toy split 'rg-{name}': reasoning-gym could not build it ({e})") from None
    return [Problem(id=f"toy-rg-{name}-{i}", prompt=row["question"], answer=str(row["answer"]),
                    source=f"reasoning_gym:{name}", meta={"kind": f"rg-{name}"}) for i, row in enumerate(ds)]


def toy_problems(split: str, seed: int = 0) -> list[Problem]:
    """Problems of a toy split: 'train' / 'train-varied' / 'train-diverse' (seeded by `seed`), 'heldout' / 'easy' /
    'hard' /
    'ood-wording' / 'ood-size' (fixed, seed ignored), 'rg-<reasoning-gym dataset>' (256 problems, seeded)."""
    if split in ("train", "train-varied", "train-diverse"):
        reserved = _reserved_prompts()
        rng = random.Random(f"train-{seed}")
        words = random.Random(f"{split}-{seed}")
        out = []
        while len(out) < SPLIT_SIZES["train"]:
            t = sample_task(rng)
            if t.prompt not in reserved:  # the same problems as 'train'; 'train-varied' / '-diverse' reword them
                out.append(_to_problem(reworded(t, words, split[len("train-"):]) if split != "train" else t,
                                       split, len(out)))
        return out
    if split == "ood-size":
        longest, rng, out = level1_prompt_len(), random.Random(f"{HELDOUT_SEED}-size"), []
        while len(out) < SPLIT_SIZES[split]:
            t = sample_task(rng, level=2)
            if len(t.prompt) > longest[t.kind] and t.prompt not in {o.prompt for o in out}:
                out.append(t)
        return [_to_problem(t, split, i) for i, t in enumerate(out)]
    if split in ("heldout", "easy", "hard"):
        level = {"heldout": None, "easy": 0, "hard": 1}[split]
        return [_to_problem(t, split, i) for i, t in enumerate(_fixed_tasks(split, SPLIT_SIZES[split], level))]
    if split == "ood-wording":
        rng = random.Random(f"{HELDOUT_SEED}-wording")
        tasks = _fixed_tasks(split, SPLIT_SIZES[split], 1)
        return [_to_problem(reworded(t, rng), split, i) for i, t in enumerate(tasks)]
    if split.startswith("rg-"):
        return _rg_problems(split[3:], 256, seed)
    raise ValueError(f"unknown toy split '{split}' (train, train-varied, train-diverse, heldout, easy, hard, "
                     "ood-wording, ood-size, rg-<reasoning-gym dataset>)")


register_source("toy", lambda split, seed: toy_problems(split, seed=seed))  # 'toy:train', 'toy:heldout', ...
