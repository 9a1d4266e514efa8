"""Rollout throughput: our TIR rollout vs a naive loop, side by side in one run, on the same model and prompts.

    .venv/bin/python bench/rollout.py [--problems 16] [--n 4] [--latency 0.2] [--device cpu]
    .venv/bin/python bench/rollout.py --model ~/.cache/zerotir/smollm2-135m --problems 8   # + a real model, side by side

* ours:  `zerotir.rollout.tir.rollout` — HFEngine continuous batching (own KV cache, rows leave/join, cache reuse
         after tool output), sandbox calls awaited per trajectory while the others keep decoding.
* naive: per turn, HF `generate` on the whole active batch (left-padded, same sampling settings, stopping per row at
         the same python-block close / EOS), then every tool call of the batch runs (one after another) once the
         whole batch has stopped; the next turn re-encodes nothing but re-prefills everything.

The default model is the tiny model taught the tool format (tests/support/tool_model.py), so real code blocks are
written and executed by the real sandbox. `--model DIR` adds a real HF model directory (e.g. SmolLM2-135M imported
with `zerotir models import-gguf`, prompted with the few-shot chat template it follows): both sizes are measured in
the same run and their ratios printed side by side (`--skip-tiny` measures only DIR). `--dtype bfloat16` runs both
loops in bf16 (a lever to measure: it helps only where the CPU has bf16 arithmetic). Reported: sampled tokens/s of each, the speed-up, and our wall time with an injected
tool latency (added to each sandbox call) relative to the zero-latency run (target <= 1.3×).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support, when run as a script


class LatencySandbox:
    """The real sandbox with `delay` seconds added to each call (a slow remote service / heavy code)."""

    def __init__(self, sb, delay: float):
        self.sb, self.delay = sb, delay

    async def arun(self, code):
        await asyncio.sleep(self.delay)
        return await self.sb.arun(code)

    def run(self, code):
        time.sleep(self.delay)
        return self.sb.run(code)

    def session(self):
        outer, inner = self, self.sb.session()

        class _S:
            async def arun(self, code):
                await asyncio.sleep(outer.delay)
                return await inner.arun(code)

            def run(self, code):
                time.sleep(outer.delay)
                return inner.run(code)

            def close(self):
                inner.close()
        return _S()


def naive_rollout(model, tok, sandbox, problems, n, cfg, max_tool_calls, seed=0):
    """The baseline described in the module docstring. Returns (sampled tokens, executed calls)."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    from zerotir.rollout.format import format_tool_output
    from zerotir.rollout.templates import encode_prompt
    from zerotir.rollout.textstream import IncrementalDetokenizer, StopMatcher, find_code_block
    from zerotir.rollout.tir import render_result, tokenize_block

    class CodeStop(StoppingCriteria):
        """Per-row stop at the python-block close (same rule as HFEngine), incremental text per row."""

        def __init__(self, start: int, b: int):
            self.start = start
            self.detok = [IncrementalDetokenizer(tok) for _ in range(b)]
            self.match = [StopMatcher([], code_block=True) for _ in range(b)]
            self.stop_at = [None] * b

        def __call__(self, input_ids, scores, **kw):
            done = []
            for r in range(input_ids.shape[0]):
                if self.stop_at[r] is None and input_ids.shape[1] > self.start:
                    if self.detok[r].add(int(input_ids[r, -1])) and self.match[r].feed(self.detok[r].text):
                        self.stop_at[r] = input_ids.shape[1] - self.start
                done.append(self.stop_at[r] is not None)
            return torch.tensor(done, device=input_ids.device)

    torch.manual_seed(seed)
    seqs = []
    for p in problems:
        _, ids = encode_prompt(cfg.template, p.prompt, tok)
        for _ in range(n):
            seqs.append(dict(prompt=ids, resp=[], sampled=0, calls=0, done=False,
                             session=sandbox.session() if cfg.stateful_tools else None))
    pad = tok.pad_token_id
    executed = 0
    while True:
        active = [s for s in seqs if not s["done"]]
        if not active:
            break
        ctxs = [s["prompt"] + s["resp"] for s in active]
        width = max(len(c) for c in ctxs)
        ids = torch.tensor([[pad] * (width - len(c)) + c for c in ctxs], device=model.device)
        att = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in ctxs], device=model.device)
        room = max(cfg.max_total_tokens - len(s["resp"]) for s in active)
        stop = CodeStop(width, len(active))
        with torch.no_grad():
            out = model.generate(ids, attention_mask=att, do_sample=True, temperature=cfg.temperature, top_k=0,
                                 top_p=1.0, max_new_tokens=min(cfg.max_new_tokens_per_turn, room),
                                 stopping_criteria=StoppingCriteriaList([stop]), pad_token_id=pad,
                                 eos_token_id=tok.eos_token_id)
        pending = []
        for r, s in enumerate(active):
            gen = out[r, width:].tolist()
            limit = min(cfg.max_new_tokens_per_turn, cfg.max_total_tokens - len(s["resp"]))
            cut = stop.stop_at[r] or len(gen)
            if tok.eos_token_id in gen[:cut]:
                cut = gen.index(tok.eos_token_id) + 1
            cut = min(cut, limit)
            s["resp"] += gen[:cut]
            s["sampled"] += cut
            text = tok.decode(gen[:cut])
            block = find_code_block(text) if stop.stop_at[r] and stop.stop_at[r] <= cut else None
            if block is None or len(s["resp"]) >= cfg.max_total_tokens:
                s["done"] = True
            else:
                pending.append((s, block[0]))
        for s, code in pending:  # tools run only after the whole batch stopped, one after another
            if s["calls"] >= max_tool_calls:
                msg = cfg.tool_budget_message
                blk = tokenize_block(tok, msg, cfg.max_tool_output_tokens, cfg.max_total_tokens - len(s["resp"]))
            else:
                res = (s["session"] or sandbox).run(code)
                s["calls"] += 1
                executed += 1
                blk = tokenize_block(tok, render_result(res), cfg.max_tool_output_tokens,
                                     cfg.max_total_tokens - len(s["resp"]), force_marker=res.truncated)
            if blk is None:
                s["done"] = True
            else:
                s["resp"] += blk.ids
                if len(s["resp"]) >= cfg.max_total_tokens:
                    s["done"] = True
    for s in seqs:
        if s["session"] is not None:
            s["session"].close()
    assert format_tool_output  # same block format as ours (through tokenize_block)
    return sum(s["sampled"] for s in seqs), executed


def measure(model_dir: str, template: str, args, label: str) -> dict:
    """Both loops on one model; returns the mean ratios (see the module docstring)."""
    from zerotir.config import Config
    from zerotir.models import load_model_and_tokenizer
    from zerotir.rollout.engines import make_engine
    from zerotir.rollout.tir import rollout
    from zerotir.sandbox import Sandbox
    from zerotir.types import Problem

    model, tok = load_model_and_tokenizer(model_dir, args.device, args.dtype)
    n_params = sum(p.numel() for p in model.parameters())
    full = Config()
    full.model.path, full.model.dtype, full.rollout.batch_size = str(model_dir), args.dtype, args.batch
    full.rollout.engine = "hf"
    cfg = dataclasses.replace(full.rollout, template=template, max_total_tokens=args.max_total_tokens,
                              max_new_tokens_per_turn=min(128, args.max_total_tokens), temperature=1.0)
    problems = [Problem(id=f"b{i}", prompt=f"What is {11 + 7 * i}*{23 + 5 * i}?",
                        answer=str((11 + 7 * i) * (23 + 5 * i))) for i in range(args.problems)]
    print(f"\n== {label}: {model_dir} ({n_params / 1e6:.1f}M parameters, {args.dtype}, template '{template}')",
          flush=True)
    rows = []
    with Sandbox(workers=2, timeout_s=5.0, isolation="full") as sb:
        sb.run("print(1)")
        slow = LatencySandbox(sb, args.latency)

        def ours(box, seed):
            eng = make_engine(full, device=args.device, seed=seed)  # its own copy of the same weights
            if args.engine_threads is not None:  # a fixed count instead of the measured choice (ablation)
                eng.thread_tuner, eng.cpu_threads = None, args.engine_threads
            t = time.perf_counter()
            trajs = rollout(problems, eng, box, cfg, n_samples=args.n, max_tool_calls=args.max_tool_calls, seed=seed)
            dt = time.perf_counter() - t
            return dt, sum(x.num_sampled_tokens for x in trajs), sum(x.num_tool_calls for x in trajs)

        def naive(box, seed):
            t = time.perf_counter()
            tokens = calls = 0
            per = max(1, args.batch // args.n)  # the same number of rows per generate call as our engine's batch
            for i in range(0, len(problems), per):
                a, b = naive_rollout(model, tok, box, problems[i:i + per], args.n, cfg, args.max_tool_calls, seed)
                tokens, calls = tokens + a, calls + b
            return time.perf_counter() - t, tokens, calls

        ours(sb, 999)  # warm-up
        cases = [("ours", ours, sb), ("naive", naive, sb)]
        if args.latency > 0:
            cases += [(f"ours+{args.latency:g}s", ours, slow), (f"naive+{args.latency:g}s", naive, slow)]
        for rep in range(args.repeats):
            for name, fn, box in cases:
                dt, tokens, calls = fn(box, rep)
                rows.append((name, dt, tokens, calls))
                print(f"{name:>12}: {dt:7.2f}s  {tokens:6d} sampled tokens  {tokens / dt:8.1f} tok/s  "
                      f"{calls:4d} tool calls", flush=True)

    def mean(name, i):
        v = [r[i] for r in rows if r[0] == name]
        return sum(v) / len(v)

    lat = f"{args.latency:g}s"
    out = {"label": label, "params": n_params, "ours_tps": mean("ours", 2) / mean("ours", 1),
           "naive_tps": mean("naive", 2) / mean("naive", 1)}
    out["speed"] = out["ours_tps"] / out["naive_tps"]
    if args.latency > 0:
        out["slow_ratio"] = mean(f"ours+{lat}", 1) / mean("ours", 1)
        out["naive_slow"] = mean(f"naive+{lat}", 1) / mean("naive", 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32, help="rows decoded together (rollout.batch_size), both loops")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tool-calls", type=int, default=2)
    ap.add_argument("--max-total-tokens", type=int, default=256)
    ap.add_argument("--latency", type=float, default=0.2, help="injected tool latency (0: skip those runs)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: the 2 cores are shared)")
    ap.add_argument("--model-dir", default=str(Path.home() / ".cache" / "zerotir" / "bench-tool-model"),
                    help="where the tiny tool model is built (cached)")
    ap.add_argument("--model", default=None, help="also measure this HF model directory (e.g. SmolLM2-135M)")
    ap.add_argument("--template", default=None,
                    help="template for --model (default: chat_fewshot if it has a chat template, else zerotir)")
    ap.add_argument("--skip-tiny", action="store_true", help="measure only --model")
    ap.add_argument("--dtype", default="float32", help="float32 or bfloat16, both loops")
    ap.add_argument("--engine-threads", type=int, default=None,
                    help="ours: fixed engine threads instead of the measured choice (ablation)")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.skip_tiny and not args.model:
        ap.error("--skip-tiny needs --model DIR")

    results = []
    if not args.skip_tiny:
        from tests.support.tool_model import make_tool_model

        t0 = time.perf_counter()
        tiny = make_tool_model(args.model_dir, steps=150)
        print(f"tiny model: {tiny} (ready in {time.perf_counter() - t0:.1f}s)")
        results.append(measure(str(tiny), "toy", args, "tiny"))
    if args.model:
        from zerotir.models import check_model_dir, load_tokenizer

        real = check_model_dir(args.model)
        template = args.template or ("chat_fewshot" if getattr(load_tokenizer(real), "chat_template", None)
                                     else "zerotir")
        results.append(measure(str(real), template, args, real.name))

    print(f"\n{args.problems} prompts × {args.n} samples, batch {args.batch}, max {args.max_tool_calls} tool calls, "
          f"{args.max_total_tokens} token budget, device {args.device}, {args.dtype}, torch threads {args.threads}, "
          f"engine threads {args.engine_threads if args.engine_threads is not None else 'measured'}")
    lat = f"{args.latency:g}s"
    print(f"{'model':>16} {'params':>8} {'ours tok/s':>11} {'naive tok/s':>12} {'ours/naive':>11}"
          + (f" {'ours +' + lat + ' lat.':>15} {'naive +' + lat + ' lat.':>16}" if args.latency > 0 else ""))
    for r in results:
        line = (f"{r['label']:>16} {r['params'] / 1e6:7.1f}M {r['ours_tps']:11.1f} {r['naive_tps']:12.1f} "
                f"{r['speed']:10.2f}×")
        if args.latency > 0:
            line += f" {r['slow_ratio']:14.2f}× {r['naive_slow']:15.2f}×"
        print(line)
    print("targets: ours/naive ≥ 2×; ours wall time with tool latency / without ≤ 1.3×")


if __name__ == "__main__":
    main()
