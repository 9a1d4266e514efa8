"""The learner's weight I/O: plain HF-named policy weights for engine sync, the policy as an HF directory, and the
optimizer / scheduler / critic / adapter state that checkpoints carry. LoRA policies are merged on the way out.

FSDP-sharded learners (`learner.sharded`, see `train.sharding`): `policy_state_dict` and `save_policy` are
collectives that gather the full weights once (rank 0 gets them, other ranks {} / write nothing); the optimizer and
critic state go to `sharding.save_sharded` (torch.distributed.checkpoint), so `trainer_state` keeps only the
schedulers and the update count."""

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
    if learner.sharded:
        from zerotir.train.sharding import full_state_dict

        return full_state_dict(policy)
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
    if learner.sharded:
        import torch.distributed as dist

        from zerotir.train.sharding import full_state_dict, model_dtype, save_hf_dir

        sd = full_state_dict(policy, model_dtype(learner.cfg))     # every rank gathers; rank 0 writes
        if dist.get_rank() == 0:
            save_hf_dir(policy, sd, out_dir)
            learner.tokenizer.save_pretrained(str(out_dir))
        return
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
    if learner.sharded:
        from zerotir.train.sharding import load_full_state_dict

        load_full_state_dict(policy, sd)
        return
    missing, unexpected = policy.load_state_dict(sd, strict=False)
    tied = set(getattr(policy, "_tied_weights_keys", None) or [])
    bad = [k for k in missing if k not in tied and not (k.endswith("lm_head.weight") and
                                                         getattr(policy.config, "tie_word_embeddings", False))]
    if bad or unexpected:
        raise RuntimeError(f"{model_dir}: checkpoint does not match the model (missing {bad[:3]}, "
                           f"unexpected {list(unexpected)[:3]})")


def trainer_state(learner) -> dict[str, Any]:
    """Optimizer/scheduler/critic (and LoRA adapter) state for checkpoints (sharded: schedulers and count only)."""
    if learner.sharded:
        st = {"sharded": True, "scheduler": learner.scheduler.state_dict(), "updates": learner.updates}
        if learner.critic is not None:
            st["critic_scheduler"] = learner.critic_scheduler.state_dict()
        return st
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
    """Restore what `trainer_state` saved (sharded: after `sharding.load_sharded` restored the rest)."""
    if bool(st.get("sharded")) != learner.sharded:
        raise RuntimeError(f"checkpoint trainer state was saved {'with' if st.get('sharded') else 'without'} "
                           f"train.learner_sharding 'fsdp'; resume with the same setting")
    if learner.sharded:
        learner.scheduler.load_state_dict(st["scheduler"])
        learner.updates = int(st.get("updates", 0))
        if learner.critic is not None:
            learner.critic_scheduler.load_state_dict(st["critic_scheduler"])
        return
    learner.optimizer.load_state_dict(st["optimizer"])
    learner.scheduler.load_state_dict(st["scheduler"])
    learner.updates = int(st.get("updates", 0))
    if learner.lora:
        learner.policy.load_state_dict(st["adapter"], strict=False)
    if learner.critic is not None:
        learner.critic.load_state_dict(st["critic"])
        learner.critic_optimizer.load_state_dict(st["critic_optimizer"])
        learner.critic_scheduler.load_state_dict(st["critic_scheduler"])
