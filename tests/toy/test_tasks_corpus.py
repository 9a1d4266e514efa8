"""Unit tests: toy tasks (answers exact, splits fixed and disjoint), corpus (exact tool format), tokenizer."""

import contextlib
import io
import random

import pytest

from zerotir.rollout.format import CODE_CLOSE, CODE_OPEN, OUTPUT_OPEN, extract_open_code, format_tool_output
from zerotir.toy.corpus import (TOY_TEMPLATE, CorpusSpec, build_corpus, code_solution, corpus_stats,
                                plausible_wrong, snippet, text_solution)
from zerotir.toy.tasks import GENERATORS, Task, toy_problems


def _run(code: str) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(code, {})
    return buf.getvalue().strip()


def test_hand_computed_examples():
    rng = random.Random(0)
    t = GENERATORS["mul"](rng, 1)
    a, b = map(int, t.expr.split("*"))
    assert t.answer == a * b and t.prompt == f"What is {a}*{b}?" and t.code == f"print({a}*{b})"
    lin = GENERATORS["lin"](random.Random(3), 1)
    # "Solve A*x + B = C for x." with an integer solution
    lhs, c = lin.prompt[len("Solve "):-len(" for x.")].split(" = ")
    a, b = lhs.split("*x + ")
    assert int(a) * lin.answer + int(b) == int(c)


@pytest.mark.parametrize("kind", sorted(GENERATORS))
@pytest.mark.parametrize("level", [0, 1, 2])
def test_canonical_code_prints_the_answer(kind, level):
    rng = random.Random(kind + str(level))
    for _ in range(20):
        t = GENERATORS[kind](rng, level)
        assert _run(t.code) == str(t.answer), t


def test_splits_fixed_disjoint_and_seeded():
    held = toy_problems("heldout")
    assert len(held) == 256 and held == toy_problems("heldout", seed=5)  # fixed: seed ignored
    assert len({p.prompt for p in held}) == 256
    train0 = toy_problems("train", seed=0)
    assert len(train0) == 20_000
    fixed = {p.prompt for s in ("heldout", "easy", "hard") for p in toy_problems(s)}
    assert not fixed & {p.prompt for p in train0}
    assert [p.prompt for p in toy_problems("train", seed=1)[:50]] != [p.prompt for p in train0[:50]]
    assert all(p.meta["level"] == 0 for p in toy_problems("easy"))
    assert all(p.meta["level"] == 1 for p in toy_problems("hard"))
    kinds = {p.meta["kind"] for p in held}
    assert {"mul", "add", "gcd", "lin"} <= kinds


def test_ood_splits_are_outside_training_and_the_corpus():
    from zerotir.toy.tasks import WORDINGS, level1_prompt_len

    train = {p.prompt for p in toy_problems("train", seed=0)}
    corpus = build_corpus(CorpusSpec(n_docs=3000))
    longest = level1_prompt_len()
    size, wording = toy_problems("ood-size"), toy_problems("ood-wording")
    assert len(size) == len(wording) == 256 and size == toy_problems("ood-size", seed=3)
    assert len({p.prompt for p in size}) == 256 and len({p.prompt for p in wording}) == 256
    assert not train & {p.prompt for p in size + wording}
    # larger operands: every prompt longer than any level-1 prompt of its kind, at least 4 kinds present
    assert all(len(p.prompt) > longest[p.meta["kind"]] and p.meta["level"] == 2 for p in size)
    assert len({p.meta["kind"] for p in size}) >= 4
    # held-out phrasings: none starts like a training prompt, and no phrasing's fixed words occur in the corpus
    assert not any(p.prompt.startswith(("What is", "Solve ")) for p in wording)
    for w in WORDINGS:
        words = [part for part in w.split("{e}") if part.strip(" .?=")]
        assert not any(part in doc for part in words for doc in corpus), w
    # same answers and code as the underlying level-1 task: the canonical code still prints the gold answer
    for p in wording[:30] + size[:30]:
        assert _run(p.meta["code"]) == p.answer


def test_varied_curriculum_is_opt_in_and_keeps_the_held_out_phrasings_out():
    import hashlib

    from zerotir.toy.base import BASE_SIZES, BASE_VARIANTS
    from zerotir.toy.cache import spec_hash
    from zerotir.toy.tasks import WORDINGS

    # opt-in: the default corpus and the cached bases' hashes are what they were before the option existed
    # (update these pins only on purpose: a change orphans every cached base and the shipped one's provenance)
    fixed = build_corpus(CorpusSpec(n_docs=2000))
    assert hashlib.sha256("\n".join(fixed).encode()).hexdigest()[:10] == "829615d2cc"
    # toy-3m: 8ef71ad1cc since its budget went from 500 to 1,500 steps (the 500-step base was a83fc13459)
    assert spec_hash(BASE_SIZES["toy-3m"]) == "8ef71ad1cc" and spec_hash(BASE_SIZES["toy-0.8m"]) == "36d2ac0360"
    assert spec_hash(BASE_VARIANTS["toy-0.8m-varied"]) != spec_hash(BASE_SIZES["toy-0.8m"])
    varied = build_corpus(CorpusSpec(n_docs=2000, wordings="varied"))
    questions = [d.split("\nA: ")[0] for d in varied if d.startswith("Q: ")]
    starts = {q.split()[1] for q in questions}
    assert {"What", "Compute", "How", "Give", "Tell"} <= starts  # several phrasings...
    for w in WORDINGS:  # ...but never a held-out one
        words = [part for part in w.split("{e}") if part.strip(" .?=")]
        assert not any(part in doc for part in words for doc in varied), w
    # the same 2000 documents otherwise: snippets identical, Q/A answers identical (a 'lin' code solution restates
    # its question, so those are compared from the code block on)
    assert [d for d in varied if not d.startswith("Q: ")] == [d for d in fixed if not d.startswith("Q: ")]
    tail = lambda d: d.split("\nA: ")[1].split("```python")[-1]  # noqa: E731
    assert [tail(d) for d in varied if d.startswith("Q: ")] == [tail(d) for d in fixed if d.startswith("Q: ")]
    with pytest.raises(ValueError, match="CorpusSpec.wordings"):
        build_corpus(CorpusSpec(n_docs=1, wordings="mixed"))
    # the RL split: train's problems and answers, reworded, none of them held out
    train, tv = toy_problems("train")[:500], toy_problems("train-varied")[:500]
    assert [p.answer for p in tv] == [p.answer for p in train]
    assert sum(a.prompt != b.prompt for a, b in zip(tv, train)) > 300
    ood = {p.prompt for p in toy_problems("ood-wording")}
    assert not ood & {p.prompt for p in toy_problems("train-varied")}


def test_diverse_wordings_ask_many_ways_and_never_a_held_out_one():
    from zerotir.toy.tasks import DIVERSE_LEADS, DIVERSE_WORDINGS, WORDINGS, reworded, sample_task

    diverse = build_corpus(CorpusSpec(n_docs=3000, wordings="diverse"))
    questions = [d.split("\nA: ")[0][len("Q: "):] for d in diverse if d.startswith("Q: ")]
    assert len(set(q.split()[0] for q in questions)) >= 12  # lead-ins and phrasings: many first words
    assert any(q.startswith("Please, what is ") for q in questions)  # lower case after a lead-in's comma
    for w in WORDINGS:
        words = [part for part in w.split("{e}") if part.strip(" .?=")]
        assert not any(part in doc for part in words for doc in diverse), w
    openings = lambda ws: {w.split("{e}")[0] for w in ws if w.split("{e}")[0]}  # noqa: E731
    assert not openings(WORDINGS) & openings(DIVERSE_WORDINGS)
    assert len(DIVERSE_WORDINGS) * len(DIVERSE_LEADS) == 140
    # the RL split: train's problems and answers; 'train-varied' is unchanged by the diverse option
    train, td = toy_problems("train")[:500], toy_problems("train-diverse")[:500]
    assert [p.answer for p in td] == [p.answer for p in train]
    assert len({p.prompt.split()[0] for p in td}) >= 12
    assert not {p.prompt for p in toy_problems("ood-wording")} & {p.prompt for p in toy_problems("train-diverse")}
    t = sample_task(random.Random(0))
    with pytest.raises(ValueError, match="wordings"):
        reworded(t, random.Random(0), "fancy")


def _snippet_kind(doc: str) -> str:
    """A snippet's task kind, read from its canonical code (zerotir.toy.tasks' generators)."""
    code = doc.split(CODE_OPEN)[1].split(CODE_CLOSE)[0]
    for marker, kind in (("int('", "base"), ("comb", "binom"), ("gcd", "gcd"), ("lcm", "lcm"), ("//", "lin"),
                         ("**", "pow"), (" % ", "mod"), ("*", "mul"), ("+", "add")):
        if marker in code:
            return kind
    raise AssertionError(doc)


def test_snippet_mix_balances_code_practice_and_is_opt_in():
    from collections import Counter

    from zerotir.toy.base import BASE_SIZES, BASE_VARIANTS
    from zerotir.toy.cache import spec_hash
    from zerotir.toy.corpus import uniform_mix
    from zerotir.toy.tasks import DEFAULT_MIX

    n = 4000
    default = build_corpus(CorpusSpec(n_docs=n))
    balanced = build_corpus(CorpusSpec(n_docs=n, snippet_mix=uniform_mix()))
    counts = {name: Counter(_snippet_kind(d) for d in docs if not d.startswith("Q: "))
              for name, docs in (("default", default), ("balanced", balanced))}
    # the snippet share is unchanged (25%, binomial sd ~ 0.007 here); only the snippets' kinds move
    assert all(abs(sum(c.values()) / n - 0.25) < 0.03 for c in counts.values()), counts
    assert counts["default"]["mul"] / sum(counts["default"].values()) > 0.38   # DEFAULT_MIX: 45% multiplication
    total = sum(counts["balanced"].values())
    for kind in DEFAULT_MIX:                                  # uniform: 1/9 each (binomial sd ~ 0.01 at n ~ 1000)
        assert abs(counts["balanced"][kind] / total - 1 / 9) < 0.04, (kind, counts["balanced"])
    # opt-in: the sizes' hashes are unchanged (pinned above), the variant has its own
    variants = {spec_hash(BASE_VARIANTS[n]) for n in ("toy-0.8m-balanced", "toy-0.8m-boosted", "toy-0.8m-varied")}
    assert len(variants) == 3 and not variants & {spec_hash(s) for s in BASE_SIZES.values()}
    boosted = BASE_VARIANTS["toy-0.8m-boosted"].corpus     # multiplication keeps its share of all documents
    assert boosted.snippet_share * boosted.snippet_mix["mul"] == pytest.approx(0.25 * DEFAULT_MIX["mul"])
    with pytest.raises(ValueError, match=r"CorpusSpec.snippet_mix.*got \{\}"):   # empty is an error, not the default
        build_corpus(CorpusSpec(n_docs=1, snippet_mix={}))
    with pytest.raises(ValueError, match="CorpusSpec.snippet_mix.*'muls'"):
        build_corpus(CorpusSpec(n_docs=1, snippet_mix={"muls": 1.0}))
    with pytest.raises(ValueError, match="CorpusSpec.mix"):
        build_corpus(CorpusSpec(n_docs=1, mix={"mul": 0.0}))


def test_gold_answers_verify_with_math_verify():
    from math_verify import parse, verify

    for p in toy_problems("heldout")[:20]:
        assert verify(parse(f"${p.answer}$"), parse(f"\\boxed{{{p.answer}}}"))
        assert not verify(parse(f"${p.answer}$"), parse(f"\\boxed{{{int(p.answer) + 1}}}"))


def test_unknown_split_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown toy split 'nope'"):
        toy_problems("nope")


def test_reasoning_gym_split():
    ps = toy_problems("rg-gcd")
    assert len(ps) == 256 and ps[0].source == "reasoning_gym:gcd" and ps[0].answer.strip()


def test_documents_use_the_rollout_format_exactly():
    t = Task("mul", 1, "What is 12*34?", 408, "12*34", "print(12*34)")
    sol = code_solution(t)
    assert sol == ("Compute 12*34.\n```python\nprint(12*34)\n```\n```output\n408\n```\n"
                   "So 12*34 = 408. The answer is \\boxed{408}.")
    # The model's part ends at CODE_CLOSE; the rest starts with exactly what the rollout inserts.
    cut = sol.index(CODE_CLOSE, sol.index(CODE_OPEN) + len(CODE_OPEN)) + len(CODE_CLOSE)
    assert extract_open_code(sol[:cut]) == "print(12*34)"
    assert sol[cut:].startswith(format_tool_output("408\n"))
    assert snippet(t).startswith("Compute 12*34.\n" + CODE_OPEN)
    assert TOY_TEMPLATE.format(problem=t.prompt) == "Q: What is 12*34?\nA: "


def test_text_solutions_right_when_easy_guessed_when_hard():
    rng = random.Random(0)
    easy = Task("mul", 0, "What is 7*8?", 56, "7*8", "print(7*8)")
    assert text_solution(easy, rng) == "7*8 = 56. The answer is \\boxed{56}."
    hard = Task("mul", 1, "What is 1234*567?", 699678, "1234*567", "print(1234*567)")
    guesses = [plausible_wrong(699678, rng) for _ in range(50)]
    assert all(len(str(g)) == 6 and str(g)[0] == "6" for g in guesses)
    assert sum(g == 699678 for g in guesses) <= 1
    assert OUTPUT_OPEN not in text_solution(hard, rng)


def test_corpus_shares_and_seed():
    spec = CorpusSpec(n_docs=4000, code_solution_share=0.05, snippet_share=0.3, seed=1)
    docs = build_corpus(spec)
    st = corpus_stats(docs)
    assert st["docs"] == 4000
    assert abs(st["snippets"] / 4000 - 0.3) < 0.03
    assert abs(st["code_solution_share"] - 0.05) < 0.015
    assert docs == build_corpus(spec)
    assert docs != build_corpus(CorpusSpec(n_docs=4000, seed=2))
    held = {p.prompt for p in toy_problems("heldout")}
    assert not any(d.startswith("Q: ") and d[3:].split("\n")[0] in held for d in docs)


def test_char_tokenizer_roundtrip(tmp_path):
    from transformers import AutoTokenizer

    from zerotir.toy.tokenizer import build_char_tokenizer

    build_char_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    text = "Q: What is 12*34?\nA: ```python\nprint(12*34)\n```"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == len(text)  # one token per character
    assert tok.decode(ids) == text
    assert tok.eos_token_id == 0 and tok.pad_token_id == 1 and len(tok) == 99
    assert set(tok.encode("é", add_special_tokens=False)) <= {tok.unk_token_id}  # non-ASCII is not a token


def test_char_tokenizer_under_a_qwen2_config(tmp_path):
    """transformers rebuilds the tokenizer of qwen2 models as byte-level BPE; it must still be one id per char."""
    from transformers import AutoTokenizer, Qwen2Config

    from zerotir.toy.tokenizer import build_char_tokenizer, char_id_map

    build_char_tokenizer(tmp_path)
    Qwen2Config(vocab_size=99, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
                num_key_value_heads=1).save_pretrained(str(tmp_path))
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    ids = char_id_map()
    for d in build_corpus(CorpusSpec(n_docs=200, seed=3)):
        assert tok.encode(d, add_special_tokens=False) == [ids[c] for c in d]
        assert tok.decode(tok.encode(d, add_special_tokens=False)) == d
