"""Atomic checkpoints: everything needed to continue a run exactly where it stopped.

    <run_dir>/checkpoints/step_000020/
        policy/          HF model directory (config, safetensors, tokenizer); LoRA runs save merged weights here,
                         so `zerotir eval --model .../policy` works on any checkpoint
        trainer.pt       optimizer, scheduler (, critic, LoRA adapter) state
        sharded/         FSDP-sharded learners only: policy / critic weights and optimizer states, one file per
                         rank (torch.distributed.checkpoint); trainer.pt then holds the schedulers only
        rng.pt           python / numpy / torch (/ cuda) RNG states
        state.json       step, data cursor, policy version — written last

A checkpoint is written into a hidden temporary directory and renamed into place, so a run killed at any moment
leaves either the previous complete checkpoints or the new complete one, never a half-written one. Only the newest
`keep` checkpoints are kept.

Sharded learners (train.learner_sharding 'fsdp'): every rank calls `save_checkpoint` / `load_checkpoint` (they are
collectives); rank 0 owns the directory (temporary name, rename, pruning) and writes policy/ (the weights gathered
once: still a plain HF directory), trainer.pt, rng.pt and state.json; each rank writes its shards into sharded/.
The run directory must be on a file system every rank sees. A checkpoint resumes only with the setting it was saved
with (a clear error otherwise).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CKPT_SUBDIR = "checkpoints"


def rng_state() -> dict[str, Any]:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints (state.json present), oldest first."""
    root = Path(run_dir) / CKPT_SUBDIR
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / "state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def save_checkpoint(run_dir: str | Path, step: int, learner: Any, state: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint `step` atomically and prune to the newest `keep`. `state` must be JSON-serialisable
    (step, data cursor, ...). Returns the checkpoint directory."""
    sharded = getattr(learner, "sharded", False)
    lead = _rank() == 0 if sharded else True
    root = Path(run_dir) / CKPT_SUBDIR
    final = root / checkpoint_name(step)
    pid = _rank0_pid() if sharded else os.getpid()
    tmp = root / f".{final.name}.tmp-{pid}"
    if lead:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    if sharded:
        _barrier()
    learner.save_policy(tmp / "policy")
    if sharded:
        from zerotir.train.sharding import save_sharded

        save_sharded(learner, tmp / "sharded")
    if not lead:
        _barrier()      # rank 0 finishes the directory
        return final
    torch.save(learner.trainer_state(), tmp / "trainer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    with open(tmp / "state.json", "w", encoding="utf-8") as f:
        json.dump({**state, "step": step}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    if final.exists():  # re-saving a step (e.g. after a resume): move the old one aside, then swap
        old = root / f".{final.name}.old-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    _fsync_dir(root)
    for stale in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(stale, ignore_errors=True)
    for junk in root.glob(".step_*"):  # temporaries of killed runs
        if not junk.name.endswith(f"-{pid}"):
            shutil.rmtree(junk, ignore_errors=True)
    if sharded:
        _barrier()
    return final


def load_checkpoint(path: str | Path, learner: Any, restore_rng: bool = True) -> dict[str, Any]:
    """Load policy weights, optimizer/scheduler state and RNG states into place; return state.json's content."""
    p = Path(path)
    if not (p / "state.json").is_file():
        raise FileNotFoundError(f"{p}: not a complete checkpoint (no state.json)")
    with open(p / "state.json", encoding="utf-8") as f:
        state = json.load(f)
    sharded = getattr(learner, "sharded", False)
    if sharded != (p / "sharded").is_dir():
        raise RuntimeError(f"{p}: saved {'with' if not sharded else 'without'} train.learner_sharding 'fsdp'; "
                           f"resume with the same setting")
    if sharded:
        from zerotir.train.sharding import load_sharded

        load_sharded(learner, p / "sharded")
    elif not learner.lora:
        learner.load_policy(p / "policy")
    learner.load_trainer_state(torch.load(p / "trainer.pt", map_location=learner.device, weights_only=False))
    if restore_rng:
        set_rng_state(torch.load(p / "rng.pt", weights_only=False))
    return state


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank()


def _barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def _rank0_pid() -> int:
    """Rank 0's pid on every rank: the ranks' shared temporary directory is named after it."""
    import torch.distributed as dist

    box = [os.getpid()]
    dist.broadcast_object_list(box, src=0)
    return int(box[0])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
