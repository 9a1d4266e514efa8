"""One prepared GPU check (issue 16 item 5): what the CPU test suite cannot show, in one table, in a few minutes.

    .venv/bin/python bench/gpu_check.py [--model toy] [--prompts 8] [--tokens 48] [--json out.json]
    .venv/bin/python bench/gpu_check.py --cpu     # the same rows 2-3 on CPU with gloo: checks the script itself

On a CUDA machine, with no downloads (the model is the shipped toy base, or any local HF directory):
  1. vLLM vs HFEngine, greedy: the first N tokens identical per prompt, behaviour log-probs within tolerance
     (bf16/fp32 kernels differ slightly: the tolerance is stated in the table);
  2. a TIR rollout with tools through vLLM: trajectories valid (types.Trajectory invariants), code run in the
     sandbox, how many executions and sandbox errors;
  3. one FSDP2 update on NCCL (world size 1, `train.learner_sharding: fsdp`, bf16 compute on GPU) on the rollout of
     step 2: finite loss, parameters moved.
Each row says ok / WARN / FAIL / skipped with the reason. Without CUDA the whole check is skipped with that reason (exit 0);
without vLLM rows 1-2 are skipped and row 3 still runs. Exit code 1 when a row FAILs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _row(rows: list, name: str, status: str, detail: str, seconds: float = 0.0) -> None:
    rows.append({"check": name, "status": status, "detail": detail, "seconds": round(seconds, 1)})
    print(f"[{status:>7}] {name}: {detail} ({seconds:.1f} s)", flush=True)


def _cfg(model: str, tokens: int, device: str):
    from zerotir.config import load_config

    cfg = load_config("toy", [f"model.path={model}", f"model.device={device}", f"rollout.max_total_tokens={tokens}",
                              "sandbox.isolation=rlimits" if os.geteuid() != 0 else "sandbox.isolation=full"])
    return cfg


def greedy_match(cfg, problems, tokens: int, tol: float) -> tuple[str, str, list]:
    """Row 1: the same greedy requests through vLLM and HFEngine."""
    from zerotir.rollout.engine import GenerationRequest, SamplingParams
    from zerotir.rollout.engines import make_engine
    from zerotir.rollout.templates import encode_prompt

    cfg.rollout.engine = "hf"
    hf = make_engine(cfg, device="cuda")
    cfg.rollout.engine = "vllm"
    vl = make_engine(cfg)
    ids = [encode_prompt(cfg.rollout.template, p.prompt, hf.tokenizer)[1] for p in problems]
    params = SamplingParams(temperature=0.0, max_new_tokens=tokens)
    a = hf.generate([GenerationRequest(f"h{i}", x, params) for i, x in enumerate(ids)])
    b = vl.generate([GenerationRequest(f"v{i}", x, params) for i, x in enumerate(ids)])
    same, worst, first_diff = 0, 0.0, []
    for x, y in zip(a, b):
        n = next((k for k, (s, t) in enumerate(zip(x.token_ids, y.token_ids)) if s != t), min(len(x.token_ids),
                                                                                              len(y.token_ids)))
        first_diff.append(n)
        same += n >= min(len(x.token_ids), len(y.token_ids))
        worst = max([worst] + [abs(p - q) for p, q in zip(x.logprobs[:n], y.logprobs[:n])])
    ok = same == len(ids) and worst <= tol
    detail = (f"{same}/{len(ids)} prompts identical over {tokens} greedy tokens (first divergence per prompt: "
              f"{first_diff}); max |logprob diff| on shared tokens {worst:.2e} (tolerance {tol:g})")
    del hf
    return ("ok" if ok else "FAIL"), detail, [vl]


def tir_rollout(cfg, problems, engine) -> tuple[str, str]:
    """Row 2: TIR rollout with tools through vLLM."""
    from zerotir.rollout.tir import rollout
    from zerotir.sandbox import make_sandbox

    with make_sandbox(cfg.sandbox) as sb:
        trajs = rollout(problems, engine, sb, cfg.rollout, n_samples=8, max_tool_calls=cfg.rollout.max_tool_calls,
                        seed=0)
    for t in trajs:
        t.validate()
    calls = [c for t in trajs for c in t.tool_calls]
    errs = sum(t.sandbox_error for t in trajs)
    code = sum(bool(t.tool_calls) for t in trajs)
    ok = len(trajs) == 8 * len(problems) and errs == 0
    status = ("ok" if calls else "WARN") if ok else "FAIL"  # WARN: nothing exercised the tool path
    hint = "" if calls else " (the model wrote no code block: the toy base does in ~2% of samples; try --model " \
                            "<a trained policy dir> or more --prompts)"
    return status, (f"{len(trajs)} trajectories valid; {code} wrote code, {len(calls)} executions, "
                    f"{errs} sandbox errors{hint}"), trajs


def fsdp_update(cfg, trajs, backend: str) -> tuple[str, str]:
    """Row 3: one FSDP2 update on `backend` (nccl on GPU; gloo for --cpu), world size 1."""
    import torch

    from zerotir.distributed.dp import RankShare
    from zerotir.train.learner import Learner
    from zerotir.train.update import update_phase

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group(backend, rank=0, world_size=1)
    try:
        cfg.train.learner_sharding = "fsdp"
        learner = Learner(cfg, data_parallel=RankShare(0, 1, cfg.algo.loss_agg))
        before = {k: v.detach().float().clone() for k, v in learner.policy_state_dict().items()}
        for i, t in enumerate(trajs):
            t.reward = float(i % 2)  # a spread of rewards: advantages are non-zero whatever the model wrote
        stats = update_phase(learner, trajs, cfg, 1)
        after = learner.policy_state_dict()
        moved = max(float((after[k].float() - before[k]).abs().max()) for k in before)
        loss = stats[-1].get("loss/policy", float("nan")) if stats else float("nan")
        ok = moved > 0 and loss == loss
        mem = (f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if backend == "nccl" else "")
        return ("ok" if ok else "FAIL"), f"loss/policy {loss:.4g}, max parameter change {moved:.3g}{mem}"
    finally:
        torch.distributed.destroy_process_group()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toy", help="'toy' (shipped) or a local HF model directory")
    ap.add_argument("--prompts", type=int, default=16, help="held-out toy problems (8 samples each)")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--tol", type=float, default=5e-2, help="max |logprob| difference vLLM vs HF on shared tokens")
    ap.add_argument("--json", default="")
    ap.add_argument("--cpu", action="store_true", help="rows 2-3 on CPU with gloo (checks this script, not a GPU)")
    args = ap.parse_args()

    import torch

    rows: list = []
    if not args.cpu and not torch.cuda.is_available():
        _row(rows, "all", "skipped", "no CUDA device: this check needs a GPU (the CPU paths are in make test)")
        return 0
    from zerotir.data import load_problems

    device, backend = ("cpu", "gloo") if args.cpu else ("cuda", "nccl")
    cfg = _cfg(args.model, args.tokens, device)
    problems = load_problems("toy:heldout", limit=args.prompts).problems
    try:
        import vllm  # noqa: F401
        have_vllm = True
    except ImportError:
        have_vllm = False
    trajs = None
    if have_vllm and not args.cpu:
        t0 = time.time()
        try:
            st, detail, (engine,) = greedy_match(cfg, problems, args.tokens, args.tol)
            _row(rows, "vLLM vs HFEngine (greedy)", st, detail, time.time() - t0)
            t0 = time.time()
            st, detail, trajs = tir_rollout(cfg, problems, engine)
            _row(rows, "TIR rollout with tools (vLLM)", st, detail, time.time() - t0)
        except Exception as e:  # a row fails, the check goes on
            _row(rows, "vLLM rows", "FAIL", f"{type(e).__name__}: {e}", time.time() - t0)
            traceback.print_exc()
    else:
        _row(rows, "vLLM rows", "skipped", "--cpu" if args.cpu else "vLLM is not installed (pip install vllm)")
    t0 = time.time()
    try:
        if trajs is None:  # no vLLM: the HF engine on the GPU provides the rollout
            cfg.rollout.engine = "hf"
            from zerotir.rollout.engines import make_engine

            st, detail, trajs = tir_rollout(cfg, problems, make_engine(cfg, device=device))
            _row(rows, f"TIR rollout with tools (HFEngine, {device})", st, detail, time.time() - t0)
            t0 = time.time()
        st, detail = fsdp_update(cfg, trajs, backend)
        _row(rows, f"FSDP2 update on {backend.upper()}", st, detail, time.time() - t0)
    except Exception as e:
        _row(rows, f"FSDP2 update on {backend.upper()}", "FAIL", f"{type(e).__name__}: {e}", time.time() - t0)
        traceback.print_exc()
    print("\n| check | status | detail | s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['check']} | {r['status']} | {r['detail']} | {r['seconds']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if any(r["status"] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
