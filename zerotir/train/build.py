"""Building the learner's parts: train mode without dropout, LoRA wrapping, the critic, AdamW with its LR schedule."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def lr_lambda(schedule: str, warmup: int, total: int):
    """LR multiplier per optimizer step: linear warm-up over `warmup` steps, then constant / cosine / linear to 0."""
    if schedule not in ("constant", "cosine", "linear"):
        raise ValueError(f"optim.schedule: unknown schedule '{schedule}' (constant, cosine, linear)")

    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        frac = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * frac)) if schedule == "cosine" else 1.0 - frac

    return f


def make_optimizer(params, optim_cfg, lr: float, total_updates: int):
    """AdamW over `params` at `lr` with optim_cfg's betas / weight decay and its warm-up + schedule (LambdaLR)."""
    o = optim_cfg
    opt = torch.optim.AdamW(params, lr=lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(o.schedule, o.warmup_steps, total_updates))


def prepare_train_mode(model, gradient_checkpointing: bool) -> None:
    """RL log-probs must match the rollout's, so dropout stays off. Gradient checkpointing needs train mode in HF,
    so there we switch to train mode and zero every dropout instead."""
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        for mod in model.modules():
            if isinstance(mod, nn.Dropout):
                mod.p = 0.0
        for name in ("attention_dropout", "hidden_dropout", "resid_pdrop", "attn_pdrop", "embd_pdrop"):
            if hasattr(model.config, name):
                setattr(model.config, name, 0.0)
    else:
        model.eval()


def wrap_lora(model, model_cfg):
    """The model with LoRA adapters (model.lora_rank, lora_alpha, lora_target_modules); base weights frozen."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise RuntimeError("model.lora_rank > 0 needs PEFT: pip install 'zerotir[peft]'") from None
    m = model_cfg
    lcfg = LoraConfig(r=m.lora_rank, lora_alpha=m.lora_alpha, target_modules=list(m.lora_target_modules),
                      lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    import warnings

    with warnings.catch_warnings():
        # PEFT reads transformers' deprecated `is_gradient_checkpointing` (a FutureWarning on every LoRA run that
        # the user cannot act on); only that one message is silenced.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lcfg)


def accepts_logits_to_keep(model) -> bool:
    """Whether the (base) model's forward takes `logits_to_keep` (project only the positions needed to vocab)."""
    import inspect

    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(target.forward).parameters
    except (TypeError, ValueError):
        return False


class ValueModel(nn.Module):
    """Critic: the policy's backbone architecture (own copy of the weights) + a linear value head."""

    def __init__(self, backbone: nn.Module, hidden_size: int):
        super().__init__()
        self.backbone = backbone
        self.value_head = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.value_head.weight, std=1.0 / math.sqrt(hidden_size + 1))
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask, position_ids, keep: int) -> torch.Tensor:
        """[B, L] ids → [B, keep] values of the last `keep` positions."""
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False).last_hidden_state[:, -keep:]
        return self.value_head(h.to(self.value_head.weight.dtype)).squeeze(-1).float()


def make_critic(model_cfg) -> ValueModel:
    """A critic from model.path's backbone (its own copy of the weights) in model.dtype."""
    from transformers import AutoModel

    from zerotir.models import check_model_dir

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[model_cfg.dtype]
    backbone = AutoModel.from_pretrained(str(check_model_dir(model_cfg.path)), dtype=dtype)
    backbone.eval()
    return ValueModel(backbone, backbone.config.hidden_size)
