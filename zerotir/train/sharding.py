"""FSDP2-sharded learner models (`train.learner_sharding: fsdp`): each data-parallel rank holds 1/world of the
weights, gradients and AdamW state of the policy, the critic and the frozen reference.

    shard_model(model, device, cpu_offload)      # rank 0's weights broadcast, then fully_shard per decoder layer
                                                 # and on the root; parameters become DTensors (dim-0 shards)
    full_state_dict(model)                       # collective: rank 0 gets full CPU tensors, other ranks {}
    save_sharded(learner, dir) / load_sharded(learner, dir)   # torch.distributed.checkpoint, one file per rank

Exactness (the same parameters as the unsharded data-parallel learner, tested with 2 gloo ranks in fp32): rank r's
loss is the mean over its share of the minibatch, so its gradient is scaled by share_r (`RankShare.weight`) before
backward and FSDP's reduce-scatter is told to SUM (divide factor 1, sum-only collectives: gloo has no AVG or
PREMUL_SUM) — sum_r share_r · grad_r is the single-process gradient, as in `distributed.dp`. Clipping then sees the
global norm (DTensor grads; `clip_grad_norm_` all-reduces the partial norms).

FSDP2 runs collectives inside every forward and backward, so every rank must run the same number of them: the
update pads each rank's micro-batches to the largest count over the ranks with zero-weight passes
(`pad_count`), and the shared-prompt forward (two forwards per micro-batch, only where prompts repeat) is off.
The no-grad forwards (log-probs, reference, values) run the whole batch on every rank, so their plans agree.

Precision: on GPU the sharded master weights are float32 and each layer computes in bfloat16 (MixedPrecisionPolicy
param_dtype bf16, reduce_dtype fp32: gradients are reduced in float32); `fsdp_cpu_offload` keeps the sharded
weights, gradients and optimizer state in CPU memory (FSDP2 CPUOffloadPolicy; AdamW steps on the CPU). On CPU
(gloo) everything stays in the model's dtype and the offload is a no-op.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
import torch.distributed as dist
import torch.nn as nn

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def enabled(cfg) -> bool:
    """Whether train.learner_sharding asks for FSDP (a clear error for an unknown value)."""
    mode = cfg.train.learner_sharding
    if mode not in ("none", "fsdp"):
        raise ValueError(f"train.learner_sharding: unknown value {mode!r} (none, fsdp)")
    return mode == "fsdp"


def check_supported(cfg, data_parallel) -> None:
    """Clear errors for settings FSDP sharding does not support here."""
    if cfg.model.lora_rank > 0:
        raise ValueError("train.learner_sharding 'fsdp' with model.lora_rank > 0 is not supported (LoRA adapters "
                         "and their optimizer state are small: use learner_sharding 'none')")
    if not dist.is_available() or not dist.is_initialized() or data_parallel is None:
        raise ValueError("train.learner_sharding 'fsdp' needs data-parallel learner ranks in a torch.distributed "
                         "process group (train.backend 'ray'); the local backend is one process")


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The model's transformer blocks: modules whose class HF names in `_no_split_modules` (Qwen2DecoderLayer,
    LlamaDecoderLayer, ...), else the children of the first ModuleList."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    found = [m for m in model.modules() if type(m).__name__ in names]
    if found:
        return found
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    return list(lists[0]) if lists else []


def shard_model(model: nn.Module, device: torch.device, cpu_offload: bool = False, trainable: bool = True) -> None:
    """In place: every rank takes rank 0's weights, then FSDP2 `fully_shard` on each decoder layer and on the root
    (embeddings, final norm, heads). `trainable` models get float32 master weights under GPU mixed precision."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    gpu = device.type == "cuda"
    with torch.no_grad():   # ranks built from the same seed agree already; the broadcast makes it certain
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)
    if gpu and trainable:
        model.float()
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if gpu else MixedPrecisionPolicy()
    offload = CPUOffloadPolicy() if gpu and cpu_offload else OffloadPolicy()
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=mp, offload_policy=offload)
    # the root too reshards after forward (FSDP2's default keeps it gathered until backward, and the reference's
    # no-grad forwards have no backward: its embeddings would stay whole on every rank)
    fully_shard(model, mesh=mesh, mp_policy=mp, offload_policy=offload, reshard_after_forward=True)
    for m in model.modules():
        if isinstance(m, FSDPModule):   # reduce = plain SUM: the learner scales each rank's loss by its share
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)


def pad_count(n: int, device: torch.device) -> int:
    """The largest micro-batch count over the ranks (every rank must run as many forwards/backwards)."""
    t = torch.tensor([n], dtype=torch.long, device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def grad_norm_value(norm: torch.Tensor) -> float:
    """`clip_grad_norm_`'s total norm as a float (a DTensor for sharded gradients)."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def full_state_dict(model: nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Collective (every rank must call it): the full, HF-named weights gathered once, as CPU tensors on rank 0
    (other ranks get {}). Tied weights appear once, under `named_parameters`' name, as the unsharded learner's
    `policy_state_dict`; `dtype` casts them (the checkpoint's policy/ keeps model.dtype)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    names = {k for k, _ in model.named_parameters()}
    return {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
            for k, v in sd.items() if k in names}


def base_class_name(model: nn.Module) -> str:
    """The HF class behind FSDP2's dynamic `FSDP<Class>` wrapper (what config.json's `architectures` must name)."""
    from torch.distributed.fsdp import FSDPModule

    return next(c.__name__ for c in type(model).__mro__ if not issubclass(c, FSDPModule))


def save_hf_dir(model: nn.Module, sd: dict[str, torch.Tensor], out_dir: str | Path) -> None:
    """Rank 0: the gathered weights as a plain HF directory (config.json naming the HF class, safetensors)."""
    import copy

    from huggingface_hub import save_torch_state_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(model.config)
    config.architectures = [base_class_name(model)]
    config.save_pretrained(str(out))
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(str(out))
    save_torch_state_dict({k: v.contiguous() for k, v in sd.items()}, str(out))


def load_full_state_dict(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Every rank: full HF-named weights (read from disk on each rank) into the sharded model, in place."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True, strict=False))


def _state(learner) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model, optim = get_state_dict(learner.policy, learner.optimizer)
    st = {"policy": model, "optimizer": optim}
    if learner.critic is not None:
        st["critic"], st["critic_optimizer"] = get_state_dict(learner.critic, learner.critic_optimizer)
    return st


def save_sharded(learner, path: str | Path) -> None:
    """Collective: the policy / critic weights and optimizer states, each rank writing its own shards
    (torch.distributed.checkpoint: `__<rank>_0.distcp` files + `.metadata`). Path must be shared by the ranks."""
    import torch.distributed.checkpoint as dcp

    dcp.save(_state(learner), checkpoint_id=str(path))


def load_sharded(learner, path: str | Path) -> None:
    """Collective: restore what `save_sharded` wrote into the learner's sharded models and optimizers."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    st = _state(learner)
    dcp.load(st, checkpoint_id=str(path))
    set_state_dict(learner.policy, learner.optimizer, model_state_dict=st["policy"], optim_state_dict=st["optimizer"])
    if learner.critic is not None:
        set_state_dict(learner.critic, learner.critic_optimizer, model_state_dict=st["critic"],
                       optim_state_dict=st["critic_optimizer"])


def local_numel(tensors: Iterable[torch.Tensor]) -> int:
    """Elements this rank stores (a DTensor's local shard; a plain tensor whole)."""
    return sum((t.to_local() if hasattr(t, "to_local") else t).numel() for t in tensors)


def optimizer_numel(optimizer: torch.optim.Optimizer) -> tuple[int, int]:
    """(elements this rank stores, elements of the full state) over the optimizer's tensor states (AdamW:
    exp_avg, exp_avg_sq; the scalar step counts are left out)."""
    mine = full = 0
    for st in optimizer.state.values():
        for v in st.values():
            if torch.is_tensor(v) and v.dim() > 0:
                mine += local_numel([v])
                full += v.numel()
    return mine, full


def model_dtype(cfg) -> torch.dtype:
    return _DTYPES[cfg.model.dtype]
