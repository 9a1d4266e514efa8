"""One RL step (rollout + reward + update, tools off) of zerotir vs TRL's GRPOTrainer, side by side in one run.

Same model (by default a tiny random Qwen2-style one, built here; or --model DIR), same prompts (our template's rendered text is given to TRL as its
prompt, so both see the same prompt tokens), same group size, same response budget, GRPO advantages, no KL,
clip 0.2/0.28, token-mean loss, fp32 on the same device, the same reward function (zerotir's RewardScorer).
Where ours saves work: the engine prefills a prompt once for its G samples (the other rows copy its cache) and the
learner runs each distinct prompt once per micro-batch (responses attend to its keys/values; same gradient); TRL runs
every prompt G times in both. Rounds alternate (ours, TRL, ours, TRL, ...) so background load hits both alike; each round times the second step of
a fresh run (the first carries one-off warm-up). Reported: median wall seconds per step and median CPU seconds of
this process per step (process_time: all threads; the verifier pool is shared and outside both) — on a loaded
shared machine the CPU figure is the stable one — plus the generate+reward / update breakdown and tokens per second.

    .venv/bin/python bench/train_step.py                 # P=8 prompts x G=4, 64 new tokens, 3 rounds
    .venv/bin/python bench/train_step.py --prompts 16 --group 8 --new-tokens 128 --rounds 3 --hidden 256 --layers 4
    .venv/bin/python bench/train_step.py --no-shared-prompts --engine-threads 1    # ablation: neither saving
    .venv/bin/python bench/train_step.py --model ~/.cache/zerotir/smollm2-135m --rounds 1   # + a real model

`--model DIR` adds a real HF model directory (e.g. SmolLM2-135M imported with `zerotir models import-gguf`): the tiny
model and DIR are measured in the same run and their ratios printed side by side (`--skip-tiny`: DIR only).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zerotir.config import Config  # noqa: E402
from zerotir.types import Problem, Trajectory  # noqa: E402


def make_cfg(model_dir: Path, a) -> Config:
    cfg = Config()
    cfg.model.path, cfg.model.device = str(model_dir), a.device
    r = cfg.rollout
    r.template, r.n_samples, r.temperature = "zerotir", a.group, 1.0
    r.max_new_tokens_per_turn, r.max_total_tokens, r.max_tool_calls = a.new_tokens, a.new_tokens, 0
    r.batch_size = a.prompts * a.group
    r.tool_budget_message = ""
    cfg.algo.name, cfg.algo.kl_coef, cfg.algo.clip_low, cfg.algo.clip_high = "grpo", 0.0, 0.2, 0.28
    cfg.algo.loss_agg = "token_mean"
    cfg.optim.lr, cfg.optim.grad_clip = 1e-4, 1.0
    cfg.train.prompts_per_step, cfg.train.micro_batch_tokens = a.prompts, a.micro_batch_tokens
    cfg.train.share_prompt_forward = not a.no_shared_prompts
    cfg.reward.verify_workers = 1
    cfg.sandbox.workers = 1
    return cfg


def problems(n: int) -> list[Problem]:
    return [Problem(id=f"q{i}", prompt=f"What is {i + 12} * {i + 34}? Use python if it helps.",
                    answer=str((i + 12) * (i + 34))) for i in range(n)]


class Ours:
    """zerotir's step: rollout (own KV-cache engine) → RewardScorer → collate → advantages → update → weight sync."""

    def __init__(self, cfg: Config, sandbox, scorer, share: bool = True,
                 engine_threads: int | None = None):
        from zerotir.rollout.engines import make_engine
        from zerotir.train.learner import Learner

        self.cfg, self.sandbox, self.scorer = cfg, sandbox, scorer
        self.learner = Learner(cfg)
        self.engine = make_engine(cfg, device=str(self.learner.device))  # its own copy of the policy weights
        self.engine.update_weights(self.learner.policy_state_dict(), 0)
        self.engine.share_prefill = share
        if engine_threads is not None:  # a fixed count instead of the measured choice
            self.engine.thread_tuner, self.engine.cpu_threads = None, engine_threads
        self.version = 0

    def step(self, probs: list[Problem], seed: int) -> tuple[float, int, list[Trajectory]]:
        from zerotir.rollout.tir import rollout
        from zerotir.train.update import update_phase

        t0, c0 = time.perf_counter(), time.process_time()
        trajs = rollout(probs, self.engine, self.sandbox, self.cfg.rollout, n_samples=self.cfg.rollout.n_samples,
                        max_tool_calls=0, policy_version=self.version, group_offset=0, seed=seed)
        self.scorer.score(trajs, self.cfg.rollout.max_total_tokens)
        self.gen_seconds, self.gen_cpu = time.perf_counter() - t0, time.process_time() - c0
        update_phase(self.learner, trajs, self.cfg, step=self.version + 1)   # THE update phase: one optimizer step
        self.version += 1
        self.engine.update_weights(self.learner.policy_state_dict(), self.version)
        self.cpu = time.process_time() - c0
        return time.perf_counter() - t0, sum(t.num_sampled_tokens for t in trajs), trajs


def trl_round(model_dir: Path, prompts: list[str], golds: list[str], cfg: Config, scorer, a
              ) -> tuple[float, int, float, float, float]:
    """A fresh GRPOTrainer for two steps; returns (wall s, completion tokens, generate+reward wall s, CPU s,
    generate+reward CPU s) of the second step."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    def reward(completions, answer, **kw):  # the same verifier as ours
        trajs = [Trajectory(problem_id=str(i), prompt_ids=[], response_ids=[], loss_mask=[], logprobs=[],
                            response_text=c, gold_answer=g) for i, (c, g) in enumerate(zip(completions, answer))]
        scorer.score(trajs, cfg.rollout.max_total_tokens)
        return [t.reward for t in trajs]

    class Timer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self.cpu: list[float] = []

        def on_step_begin(self, *args, **kw):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, *args, **kw):
            self.times.append(time.perf_counter() - self.t0)
            self.cpu.append(time.process_time() - self.c0)

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    ds = Dataset.from_list([{"prompt": p, "answer": g} for p, g in zip(prompts, golds)] * 4)
    args = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=a.prompts * a.group,
                      num_generations=a.group, max_completion_length=a.new_tokens, gradient_accumulation_steps=1,
                      steps_per_generation=1, max_steps=2, use_cpu=a.device == "cpu", report_to="none",
                      logging_steps=1, learning_rate=1e-4, save_strategy="no", bf16=False, seed=a.seed,
                      beta=0.0, epsilon=0.2, epsilon_high=0.28, loss_type="dapo", temperature=1.0,
                      max_grad_norm=1.0, disable_tqdm=True, shuffle_dataset=False)
    timer = Timer()
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok,
                          callbacks=[timer])
    gen_times: list[float] = []
    inner = trainer._generate_and_score_completions  # generation + reward, for the breakdown

    def timed(*args, **kw):
        t0, c0 = time.perf_counter(), time.process_time()
        out = inner(*args, **kw)
        gen_times.append((time.perf_counter() - t0, time.process_time() - c0))
        return out

    trainer._generate_and_score_completions = timed
    trainer.train()
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    tokens = int(round(float(logs[-1]["completions/mean_length"]) * a.prompts * a.group))
    return timer.times[-1], tokens, gen_times[-1][0], timer.cpu[-1], gen_times[-1][1]


def compare(model_dir: Path, label: str, a) -> dict:
    """Rounds of (ours, TRL) on one model; prints each round and returns the medians."""
    from zerotir.reward import RewardScorer
    from zerotir.sandbox import make_sandbox

    cfg = make_cfg(model_dir, a)
    probs = problems(a.prompts)
    print(f"\n== {label}: {model_dir}", flush=True)
    ours_t, ours_tok, trl_t, trl_tok, ours_gen, trl_gen = [], [], [], [], [], []
    ours_cpu, trl_cpu, ours_gcpu, trl_gcpu = [], [], [], []
    with make_sandbox(cfg.sandbox) as sandbox, RewardScorer(cfg.reward) as scorer:
        prompt_text: list[str] | None = None
        for r in range(a.rounds):
            ours = Ours(cfg, sandbox, scorer, share=not a.no_shared_prompts, engine_threads=a.engine_threads)
            n_params = sum(p.numel() for p in ours.learner.policy.parameters())
            ours.step(probs, seed=a.seed * 1000 + r)  # warm-up step of this fresh run
            sec, tok, trajs = ours.step(probs, seed=a.seed * 1000 + r + 500)
            ours_t.append(sec)
            ours_tok.append(tok)
            ours_gen.append(ours.gen_seconds)
            ours_cpu.append(ours.cpu)
            ours_gcpu.append(ours.gen_cpu)
            if prompt_text is None:
                by_id = {t.problem_id: t.prompt_text for t in trajs}
                prompt_text = [by_id[p.id] for p in probs]
            del ours
            sec, tok, gen, cpu, gcpu = trl_round(model_dir, prompt_text, [p.answer for p in probs], cfg, scorer, a)
            trl_cpu.append(cpu)
            trl_gcpu.append(gcpu)
            trl_t.append(sec)
            trl_tok.append(tok)
            trl_gen.append(gen)
            print(f"round {r + 1}: ours {ours_t[-1]:.2f} s (generate+reward {ours_gen[-1]:.2f} s, {ours_tok[-1]} "
                  f"tokens)   TRL GRPOTrainer {trl_t[-1]:.2f} s (generate+reward {trl_gen[-1]:.2f} s, "
                  f"{trl_tok[-1]} tokens)   CPU s: ours {ours_cpu[-1]:.2f}, TRL {trl_cpu[-1]:.2f}", flush=True)
    med = statistics.median
    out = {"label": label, "params": n_params, "ours_s": med(ours_t), "trl_s": med(trl_t),
           "ours_cpu": med(ours_cpu), "trl_cpu": med(trl_cpu), "ours_gen": med(ours_gen), "trl_gen": med(trl_gen),
           "ours_gcpu": med(ours_gcpu), "trl_gcpu": med(trl_gcpu),
           "ours_up": med([s - g for s, g in zip(ours_t, ours_gen)]),
           "trl_up": med([s - g for s, g in zip(trl_t, trl_gen)]),
           "tps_o": med([k / s for k, s in zip(ours_tok, ours_t)]),
           "tps_t": med([k / s for k, s in zip(trl_tok, trl_t)])}
    print(f"median step: ours {out['ours_s']:.2f} s, TRL {out['trl_s']:.2f} s  → {out['trl_s'] / out['ours_s']:.2f}x; "
          f"CPU s: ours {out['ours_cpu']:.2f}, TRL {out['trl_cpu']:.2f} → {out['trl_cpu'] / out['ours_cpu']:.2f}x "
          f"(generate+reward {out['ours_gcpu']:.2f} vs {out['trl_gcpu']:.2f}; update "
          f"{out['ours_cpu'] - out['ours_gcpu']:.2f} vs {out['trl_cpu'] - out['trl_gcpu']:.2f})", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--model", default=None, help="also measure this HF model directory (e.g. SmolLM2-135M)")
    ap.add_argument("--skip-tiny", action="store_true", help="measure only --model")
    ap.add_argument("--micro-batch-tokens", type=int, default=16384,
                    help="ours: tokens per micro-batch (default: the whole batch in one pass, as TRL does here)")
    ap.add_argument("--no-shared-prompts", action="store_true",
                    help="ours: prefill and train every prompt once per sample, as TRL does (ablation)")
    ap.add_argument("--engine-threads", type=int, default=None,
                    help="ours: fixed engine threads on CPU instead of the measured choice (ablation)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.skip_tiny and not a.model:
        ap.error("--skip-tiny needs --model DIR")
    try:
        import trl  # noqa: F401
    except ImportError:
        sys.exit("bench/train_step.py runs TRL's GRPOTrainer beside ours: pip install -e '.[bench]' (or: make bench)")
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from zerotir.models import check_model_dir
    from zerotir.models.tiny import make_tiny_model

    print(f"{a.prompts} prompts x {a.group} samples, {a.new_tokens} new tokens, tools off, fp32, device {a.device}, "
          f"torch threads {torch.get_num_threads()}; ours: shared prompts {'off' if a.no_shared_prompts else 'on'}, "
          f"engine threads {a.engine_threads if a.engine_threads is not None else 'measured'}; {a.rounds} rounds")
    results = []
    if not a.skip_tiny:
        tiny = make_tiny_model(Path(tempfile.mkdtemp()) / "tiny", hidden=a.hidden, layers=a.layers)
        results.append(compare(tiny, f"tiny h{a.hidden} l{a.layers}", a))
    if a.model:
        real = check_model_dir(a.model)
        results.append(compare(real, real.name, a))
    print(f"\n{'model':>16} {'params':>8} {'ours s':>7} {'TRL s':>7} {'wall ×':>7} {'ours CPU':>9} {'TRL CPU':>8} "
          f"{'CPU ×':>6} {'gen+rew CPU ×':>14} {'update CPU ×':>13}")
    for r in results:
        up_o, up_t = r["ours_cpu"] - r["ours_gcpu"], r["trl_cpu"] - r["trl_gcpu"]
        params = f"{r['params'] / 1e6:7.1f}M"
        print(f"{r['label']:>16} {params} {r['ours_s']:7.2f} {r['trl_s']:7.2f} {r['trl_s'] / r['ours_s']:6.2f}x "
              f"{r['ours_cpu']:9.2f} {r['trl_cpu']:8.2f} {r['trl_cpu'] / r['ours_cpu']:5.2f}x "
              f"{r['trl_gcpu'] / r['ours_gcpu']:13.2f}x {up_t / up_o:12.2f}x")
    print("target: TRL / ours >= 1.5x (CPU seconds are the stable figure on a loaded machine)")


if __name__ == "__main__":
    main()
