"""The one engine factory: every command, actor and bench that needs a generation engine builds it here.

    engine = make_engine(cfg)                                   # cfg.rollout.engine, cfg.model.path, cfg.train.seed
    engine = make_engine(cfg, model_path=run_dir / "policy", device="cpu", seed=7)

`cfg.rollout.engine` picks the implementation: 'hf' → `HFEngine` (own KV cache, CPU/GPU) over the model loaded
from `model_path` in `cfg.model.dtype`, decoding up to `cfg.rollout.batch_size` rows together; 'vllm' →
`zerotir.distributed.vllm_engine.VLLMEngine` (GPU; vLLM is imported only then, so the rest of the project never
needs it). A bad model directory raises `models.ModelError` before anything is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ENGINES: tuple[str, ...] = ("hf", "vllm")


def make_engine(cfg: Any, model_path: str | Path | None = None, device: str | None = None,
                seed: int | None = None) -> Any:
    """A fresh engine (policy version 0) for `cfg` (a `zerotir.config.Config`).

    model_path: HF model directory or 'toy' (default `cfg.model.path`).
    device: 'auto', 'cpu' or 'cuda[:N]' (default `cfg.model.device`); vLLM places itself and ignores it.
    seed: the engine's sampling seed for requests without their own (default `cfg.train.seed`).
    """
    from zerotir.models import check_model_dir, load_model_and_tokenizer, pick_device

    kind = cfg.rollout.engine
    if kind not in ENGINES:
        raise ValueError(f"rollout.engine: unknown engine '{kind}' (expected one of {', '.join(ENGINES)})")
    path = cfg.model.path if model_path is None else str(model_path)
    seed = cfg.train.seed if seed is None else int(seed)
    if kind == "vllm":
        from zerotir.distributed.vllm_engine import VLLMEngine

        return VLLMEngine(str(check_model_dir(path)), seed=seed, engine_kwargs={"dtype": cfg.model.dtype})
    from zerotir.rollout.hf_engine import HFEngine

    dev = pick_device(device or cfg.model.device)
    model, tok = load_model_and_tokenizer(path, dev, cfg.model.dtype)
    return HFEngine(model, tok, max_batch=cfg.rollout.batch_size, device=dev, seed=seed,
                    cpu_threads=_fixed_cpu_threads(cfg.rollout))


def _fixed_cpu_threads(rollout_cfg: Any) -> int | None:
    """The HF engine's CPU thread count: torch's, fixed, for deterministic rollouts (thread count changes float
    summation order); None lets the engine measure the fastest (`zerotir.rollout.threads.ThreadTuner`)."""
    import torch

    return torch.get_num_threads() if rollout_cfg.deterministic else None
