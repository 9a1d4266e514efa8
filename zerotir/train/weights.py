"""The learner's weight I/O: plain HF-named policy weights for engine sync, the policy as an HF directory, and the
optimizer / scheduler / critic / adapter state that checkpoints carry. LoRA policies are merged on the way out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def _strip_peft(key: str) -> str:
    return key.replace(".base_layer.", ".")


def policy_state_dict(learner) -> dict[str, torch.Tensor]:
    """Plain HF-named weights of the current policy, for engine sync (LoRA: merged copies)."""
    # named_parameters, not state_dict: tied weights (embeddings = lm_head) appear once, under the owner's name.
    policy = learner.policy
    if not learner.lora:
        return {k: v.detach() for k, v in policy.named_parameters()}
    policy.merge_adapter()
    try:
        base = policy.get_base_model()
        return {_strip_peft(k): v.detach().clone() for k, v in base.named_parameters() if "lora_" not in k}
    finally:
        policy.unmerge_adapter()


def save_policy(learner, out_dir) -> None:
    """Write the policy (merged, for LoRA) as an HF model directory with its tokenizer: `zerotir eval` loads it."""
    policy = learner.policy
    if learner.lora:
        policy.merge_adapter()
        try:
            base = policy.get_base_model()
            sd = {_strip_peft(k): v for k, v in base.state_dict().items() if "lora_" not in k}
            base.save_pretrained(str(out_dir), state_dict=sd)
        finally:
            policy.unmerge_adapter()
    else:
        policy.save_pretrained(str(out_dir))
    learner.tokenizer.save_pretrained(str(out_dir))


def load_policy(learner, model_dir) -> None:
    """Load weights saved by `save_policy` (full fine-tuning) into the policy in place."""
    from safetensors.torch import load_file

    sd: dict[str, torch.Tensor] = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        sd.update(load_file(str(f)))
    policy = learner.policy
    missing, unexpected = policy.load_state_dict(sd, strict=False)
    tied = set(getattr(policy, "_tied_weights_keys", None) or [])
    bad = [k for k in missing if k not in tied and not (k.endswith("lm_head.weight") and
                                                         getattr(policy.config, "tie_word_embeddings", False))]
    if bad or unexpected:
        raise RuntimeError(f"{model_dir}: checkpoint does not match the model (missing {bad[:3]}, "
                           f"unexpected {list(unexpected)[:3]})")


def trainer_state(learner) -> dict[str, Any]:
    """Optimizer/scheduler/critic (and LoRA adapter) state for checkpoints."""
    st: dict[str, Any] = {"optimizer": learner.optimizer.state_dict(), "scheduler": learner.scheduler.state_dict(),
                          "updates": learner.updates}
    if learner.lora:
        st["adapter"] = {k: v for k, v in learner.policy.state_dict().items() if "lora_" in k}
    if learner.critic is not None:
        st["critic"] = learner.critic.state_dict()
        st["critic_optimizer"] = learner.critic_optimizer.state_dict()
        st["critic_scheduler"] = learner.critic_scheduler.state_dict()
    return st


def load_trainer_state(learner, st: dict[str, Any]) -> None:
    """Restore what `trainer_state` saved."""
    learner.optimizer.load_state_dict(st["optimizer"])
    learner.scheduler.load_state_dict(st["scheduler"])
    learner.updates = int(st.get("updates", 0))
    if learner.lora:
        learner.policy.load_state_dict(st["adapter"], strict=False)
    if learner.critic is not None:
        learner.critic.load_state_dict(st["critic"])
        learner.critic_optimizer.load_state_dict(st["critic_optimizer"])
        learner.critic_scheduler.load_state_dict(st["critic_scheduler"])
