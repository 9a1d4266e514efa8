"""Pretraining the toy base models from scratch: Llama-style decoders (RoPE, RMSNorm, SwiGLU, tied embeddings) on
the generated corpus, character tokens, saved as ordinary HF directories (in the Qwen2 layout with zero q/k/v biases
— the same function; see `to_qwen2`).

    build_base(BASE_SIZES["toy-0.8m"], "zerotir/assets/toy-base")   # what `zerotir toy build-base` runs
    base_spec("toy-3m")                                              # a named size (`toy` = `toy-0.8m`)

`BASE_SIZES` is the family: the same corpus and tokenizer, width and depth scaled together. Token budgets are
Chinchilla-ish (about 20 tokens per parameter) where that is cheap and capped by wall time where it is not: the
largest size must build in under about an hour on 2 CPU cores (figures measured there are in each preset's comment).
Sizes not shipped in zerotir/assets are built on first use into the user cache (zerotir.toy.cache).

Seeded: the corpus, the initialisation and the batch order all derive from `spec.seed`, so the same seed on the
same torch build and thread count gives the same weights.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from zerotir.toy.cache import spec_record
from zerotir.toy.corpus import CorpusSpec, build_corpus, corpus_stats, uniform_mix

if TYPE_CHECKING:  # torch loads inside the functions: importing this module stays cheap
    import torch


@dataclass
class BaseSpec:
    """Architecture and pretraining settings of the toy base model."""

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 352
    max_positions: int = 512
    seq_len: int = 256
    """Characters per training window; windows start at document starts (as prompts do at rollout)."""
    batch: int = 32
    steps: int = 1000
    lr: float = 3e-3
    warmup: int = 50
    min_lr_ratio: float = 0.05
    """Cosine decay ends at lr * min_lr_ratio."""
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 2
    corpus: CorpusSpec = field(default_factory=CorpusSpec)

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq_len


BASE_SIZES: dict[str, BaseSpec] = {
    # Step counts: ~20 tokens per parameter where cheap, else capped by wall time. Per-step cost on an idle 2-core
    # machine, anchored on the 0.8M build's measured 0.63 s/step (its build.json, steps 150-700) and scaled by
    # training FLOPs per token (6N + attention); `build.json` records each build's own wall time.
    # 86,352 parameters; 600 steps = 4.9M tokens (57 per parameter: at this size steps are cheap, so the smallest
    # model is not undertrained). Added 2026-11-30 so that the study's four sizes span 36x within the hour's build
    # budget (toy-10m's fair budget is ~9-10 h here, docs/scaling.md). Built on first use: 226 s on the 2-core
    # machine, final loss 0.703 (no copying phase, which toy-0.2m has at steps 300-450); base check: 0 of 16 code
    # attempts correct; RL: 0.000 held-out accuracy for 3 of 3 seeds.
    "toy-0.1m": BaseSpec(hidden=48, layers=3, heads=4, intermediate=128, steps=600, lr=4e-3),
    # 207,616 parameters; 600 steps = 4.9M tokens (24 per parameter); est. <= 0.4 s/step, ~4 min.
    # Shipped: zerotir/assets/toy-base-0.2m.
    "toy-0.2m": BaseSpec(hidden=64, layers=4, heads=4, intermediate=176, steps=600, lr=4e-3),
    # 816,640 parameters; 900 steps = 7.4M tokens (9 per parameter). The original toy base, unchanged (its
    # build.json records these settings). Shipped: zerotir/assets/toy-base.
    "toy-0.8m": BaseSpec(hidden=128, layers=4, heads=4, intermediate=352, steps=900, lr=3e-3),
    # 3,118,464 parameters; 1,500 steps = 12.3M tokens (4 per parameter). Until 2026-11-30 it was capped at 500
    # steps (4.1M tokens; cache hash a83fc13459, what the first reference study's toy-3m cells used): that base ended
    # at loss 0.467, above toy-0.8m's 0.415 at the same 500 steps, too weak for RL (held-out accuracy 0.00 after 40
    # steps), so size and pretraining were confounded. 1,500 steps aim at least at toy-0.8m's final loss (0.372):
    # built 2026-11-30 in 5,104 s on the 2-core machine (2.9-3.1 s/step when idle, ~13 min of it shared with a test
    # run), final loss 0.357; base check: code in 3.1% of responses, 8 of 8 code attempts correct.
    "toy-3m": BaseSpec(hidden=192, layers=7, heads=6, intermediate=512, steps=1500, lr=2e-3, warmup=30),
    # 9,949,440 parameters (48x the smallest); capped at 480 steps (3.9M tokens) to build in under an hour:
    # est. <= 6.6 s/step (10.4x the 0.8M's FLOPs per token), <= 53 min.
    "toy-10m": BaseSpec(hidden=320, layers=8, heads=10, intermediate=864, steps=480, lr=1.5e-3, warmup=30),
}
"""The toy base family, name → spec, by size. Every size reads the same corpus (CorpusSpec()) with the same
tokenizer."""

BASE_VARIANTS: dict[str, BaseSpec] = {
    # toy-0.8m with the varied curriculum (CorpusSpec.wordings='varied'): same size, steps and corpus size, its Q/A
    # questions in several phrasings; RL it on `toy:train-varied`. Built on first use (~10 min idle).
    "toy-0.8m-varied": BaseSpec(hidden=128, layers=4, heads=4, intermediate=352, steps=900, lr=3e-3,
                                corpus=CorpusSpec(wordings="varied")),
    # toy-0.8m with every task kind at an equal share of the code snippets (CorpusSpec.snippet_mix): the standard
    # corpus gives multiplication 45% of them, and its base writes correct code for multiplication only. Same
    # size, steps, Q/A documents and RL set (`toy:train`). Built on first use (~10 min idle). Measured: a negative
    # result, RL does not take off (demo end 0.04 / 0.08 held-out): the base boxes numbers other than the printed
    # one, having lost most of its practice in copying long results.
    "toy-0.8m-balanced": BaseSpec(hidden=128, layers=4, heads=4, intermediate=352, steps=900, lr=3e-3,
                                  corpus=CorpusSpec(snippet_mix=uniform_mix())),
    # toy-0.8m with more code practice for the rare kinds and as much as before for multiplication: snippets are 40%
    # of the documents (25% before) and multiplication keeps its 11.25% of all documents (28% of the snippets), the
    # other 8 kinds share the rest equally (3.6% of the documents each, 1-3x before). toy-0.8m-balanced took 3/4 of
    # multiplication's snippets away and its base lost copying printed results (docs/scaling.md). Measured: faster
    # start (0.40 held-out at step 5 vs 0.25), no higher end (demo 0.56 / 0.53 vs 0.62 / 0.59).
    "toy-0.8m-boosted": BaseSpec(hidden=128, layers=4, heads=4, intermediate=352, steps=900, lr=3e-3,
                                 corpus=CorpusSpec(snippet_share=0.4,
                                                   snippet_mix={k: (0.28125 if k == "mul" else 0.71875 / 8)
                                                                for k in uniform_mix()})),
    # toy-0.8m with the diverse curriculum (CorpusSpec.wordings='diverse'): its Q/A questions asked 140 ways (a
    # lead-in times a phrasing), so the expression to copy sits at many positions; RL it on `toy:train-diverse`.
    # The varied curriculum's 6 phrasings lifted unseen phrasings from 0.00 to 0.16 (3 seeds), short of 0.5.
    # Shipped (the demo's base). Built in 1,008 s here, final loss 0.376; measured (3 seeds, greedy, 256 problems):
    # unseen phrasings 0.65, larger operands 0.51, held-out 0.73 (standard: 0.01, 0.40, 0.71).
    "toy-0.8m-diverse": BaseSpec(hidden=128, layers=4, heads=4, intermediate=352, steps=900, lr=3e-3,
                                 corpus=CorpusSpec(wordings="diverse")),
}
"""Bases outside the size family (another corpus at a family size), resolved by name like the sizes."""

BASE_ALIASES = {"toy": "toy-0.8m"}
"""Short names: `model.path: toy` is the 0.8M base the demo uses."""


def canonical_size(name: str) -> str:
    """'toy' → 'toy-0.8m'; a BASE_SIZES name → itself; anything else raises ValueError listing the sizes."""
    name = BASE_ALIASES.get(name, name)
    if name not in BASE_SIZES and name not in BASE_VARIANTS:
        known = ", ".join(["toy", *BASE_SIZES, *BASE_VARIANTS])
        raise ValueError(f"unknown toy base size '{name}' (known: {known})")
    return name


def base_spec(name: str) -> BaseSpec:
    """The spec of a named size (a fresh copy: callers may replace fields)."""
    import copy

    name = canonical_size(name)
    return copy.deepcopy(BASE_SIZES.get(name) or BASE_VARIANTS[name])


def make_model(spec: BaseSpec, vocab_size: int, eos_id: int, pad_id: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                      num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
                      max_position_embeddings=spec.max_positions, tie_word_embeddings=True, rope_theta=10000.0,
                      bos_token_id=None, eos_token_id=eos_id, pad_token_id=pad_id, attention_bias=False)
    torch.manual_seed(spec.seed)
    return LlamaForCausalLM(cfg)


def to_qwen2(llama):
    """The same function as a Qwen2ForCausalLM (zero q/k/v biases): Qwen2's forward accepts the per-layer-type
    attention-mask mapping the rollout's HF engine passes, Llama's does not. Logits are unchanged."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    c = llama.config
    cfg = Qwen2Config(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                      num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                      num_key_value_heads=c.num_key_value_heads, max_position_embeddings=c.max_position_embeddings,
                      rms_norm_eps=c.rms_norm_eps, rope_theta=getattr(c, "rope_theta", None) or
                      c.rope_parameters["rope_theta"], tie_word_embeddings=True, use_sliding_window=False,
                      bos_token_id=None, eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id)
    q = Qwen2ForCausalLM(cfg)
    state = {k: v for k, v in llama.state_dict().items()}
    with torch.no_grad():
        for name, p in q.named_parameters():
            p.copy_(state[name] if name in state else torch.zeros_like(p))  # only the q/k/v biases are new
    return q.eval()


def lr_at(step: int, spec: BaseSpec) -> float:
    """Linear warm-up, then cosine decay to lr * min_lr_ratio (step is 0-based)."""
    if step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    frac = (step - spec.warmup) / max(spec.steps - spec.warmup, 1)
    return spec.lr * (spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def encode_corpus(docs: list[str], tok) -> tuple["torch.Tensor", "torch.Tensor"]:
    """All documents as one token stream (EOS after each) and the start offset of each document.
    Returns (tokens [N] long, starts [D] long)."""
    import torch

    from zerotir.toy.tokenizer import char_id_map

    vocab = char_id_map()
    unk, eos = vocab["<unk>"], tok.eos_token_id
    ids: list[int] = []
    starts: list[int] = []
    for d in docs:
        starts.append(len(ids))
        ids.extend(vocab.get(c, unk) for c in d)  # char-level: one token per character
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(starts, dtype=torch.long)


RESUME_EVERY = 25
"""Steps between resume points of a build (model, optimizer, batch-order RNG): a killed build loses at most these."""
RESUME_FILE = "resume.pt"


def _spec_key(spec: BaseSpec) -> str:
    return json.dumps(spec_record(spec), sort_keys=True, default=str)


def build_base(spec: BaseSpec, out_dir: str | Path, log: Callable[[str], None] = print, *, progress: bool = False,
               name: str = "", until: int | None = None) -> dict | None:
    """Pretrain and save the toy base to `out_dir`; returns a summary (also written to out_dir/build.json).

    progress: a progress bar (for a terminal) instead of a log line every 50 steps. name: the size's name, recorded.
    Resumable: every RESUME_EVERY steps the training state goes to out_dir/resume.pt (atomically); a build started
    again on the same out_dir and spec continues from it and ends with the same weights as an uninterrupted one
    (same torch build and thread count). until: stop after that step, leaving the resume point (returns None)."""
    import torch

    from zerotir.toy.tokenizer import build_char_tokenizer

    torch.set_num_threads(spec.threads)
    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_char_tokenizer()
    docs = build_corpus(spec.corpus)
    stats = corpus_stats(docs)
    tokens, starts = encode_corpus(docs, tok)
    # Windows must fit: keep starts with a full window after them.
    starts = starts[starts + spec.seq_len + 1 <= len(tokens)]
    log(f"corpus: {stats['docs']} docs, {stats['chars'] / 1e6:.2f}M chars, {stats['snippets']} snippets, "
        f"{stats['qa_with_code']} of {stats['qa']} Q/A solutions use code ({stats['code_solution_share']:.1%})")

    model = make_model(spec, len(tok), tok.eos_token_id, tok.pad_token_id)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: Llama-style, {n_params / 1e6:.2f}M parameters, vocab {len(tok)}")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": spec.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=spec.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(spec.seed)
    offs = torch.arange(spec.seq_len + 1)
    model.train()
    ema, losses, start, before = None, [], 0, 0.0
    resume = out / RESUME_FILE
    if resume.is_file():
        st = torch.load(resume, weights_only=False)
        if st.get("spec") == _spec_key(spec):
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["opt"])
            gen.set_state(st["gen"])
            ema, losses, start, before = st["ema"], st["losses"], st["step"], st["seconds"]
            log(f"resuming the build at step {start}/{spec.steps} ({resume})")
        else:
            log(f"{resume} was written for another spec: starting over")

    def save_resume(done: int) -> None:
        tmp = resume.with_suffix(".tmp")
        torch.save({"spec": _spec_key(spec), "step": done, "model": model.state_dict(), "opt": opt.state_dict(),
                    "gen": gen.get_state(), "ema": ema, "losses": losses,
                    "seconds": before + time.time() - t0}, tmp)
        tmp.replace(resume)

    bar = _progress_bar(spec.steps, name or "toy base") if progress else None
    if bar is not None:
        bar.update(start)
    for step in range(start, spec.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, spec)
        idx = starts[torch.randint(len(starts), (spec.batch,), generator=gen)]
        window = tokens[idx[:, None] + offs[None, :]]  # [B, T+1]
        logits = model(input_ids=window[:, :-1]).logits  # [B, T, V]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.3f}", refresh=False)
        if (step + 1) % 50 == 0 or step == 0:
            losses.append({"step": step + 1, "loss": round(ema, 4), "seconds": round(time.time() - t0, 1)})
            if bar is None:
                log(f"step {step + 1}/{spec.steps}  loss {ema:.4f}  lr {lr_at(step, spec):.2e}  "
                    f"{before + time.time() - t0:.0f}s")
        if step + 1 < spec.steps and ((step + 1) % RESUME_EVERY == 0 or step + 1 == until):
            save_resume(step + 1)
        if until is not None and step + 1 >= until and step + 1 < spec.steps:
            if bar is not None:
                bar.close()
            return None
    if bar is not None:
        bar.close()
    model = to_qwen2(model.eval())
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    summary = {"name": name, "spec": spec_record(spec), "params": n_params, "corpus": stats, "final_loss": ema,
               "seconds": round(before + time.time() - t0, 1), "threads": spec.threads, "torch": torch.__version__,
               "loss_curve": losses, "resumed_at": start or None}
    resume.unlink(missing_ok=True)
    (out / "build.json").write_text(json.dumps(summary, indent=1))  # last: marks the build complete
    log(f"saved to {out} ({summary['seconds']:.0f}s, final loss {ema:.4f})")
    return summary


def _progress_bar(total: int, desc: str):
    """tqdm (a dependency of transformers) on stderr."""
    from tqdm import tqdm

    return tqdm(total=total, desc=f"building {desc}", unit="step", dynamic_ncols=True)
