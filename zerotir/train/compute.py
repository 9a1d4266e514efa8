"""Compute accounting: the `compute/*` names every metrics row carries, cumulative from step 0.

How FLOPs are counted (estimates in the Kaplan et al. 2020 convention; multiply-add = 2 FLOPs):

* N = every parameter of the policy (embeddings included: with tied embeddings the output projection is a real
  2·V·d matmul per token; the input lookup is counted too, overestimating by at most V·d per token).
* A forward pass costs, per token at position p (0-based, counting the prompt), 2·N + 4·L·d·p: the dense part plus
  attention (QKᵀ and AV, each p·d multiply-adds per layer; L layers, d = heads · head_dim). For the toy models the
  attention term is ~30% of the total at 300 tokens, so it is not dropped.
* A trained token costs 3× its forward (forward + backward: 6·N + 12·L·d·p).
* Rollout: each prompt is prefilled once per group (the engine shares one prefill among a group's samples, see
  rollout/hf_engine.py), and every response token — sampled or inserted by the tool — is one forward token at its
  position (the KV cache is reused after tool output, so nothing is recomputed).
* Update phase: per PPO epoch every kept row is a trained sequence; the prompt counts once per group when
  train.share_prompt_forward is on, once per row otherwise. Forward-only passes of the whole batch (frozen
  reference when algo.kl_coef > 0, critic values for GAE, and the learner's own old log-probs for off-policy
  batches) cost 1× forward each; the critic, when present, also trains (3×). LoRA is counted as a full fine-tune
  (an overestimate of the backward pass).
* Held-out eval is not training compute and is left out.

`compute/tokens` counts sampled tokens (rollout) + trained tokens (prompt + response per trained row and epoch);
`compute/seconds` is the steps' summed wall time; `compute/cpu_seconds` the CPU time of this process and its reaped
children (sandbox/verifier workers are long-lived, so their CPU is not included; under Ray, the driver's only).
"""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass
from typing import Sequence

from zerotir.types import Trajectory


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP estimate needs to know about a model."""

    params: int
    layers: int
    attn_dim: int
    """heads · head_dim (the width of Q, K and V)."""


def shape_of(model) -> ModelShape:
    """The shape of a live (or meta-device) HF causal LM."""
    c = model.config
    c = getattr(c, "text_config", None) or c
    heads = int(c.num_attention_heads)
    head_dim = int(getattr(c, "head_dim", None) or c.hidden_size // heads)
    return ModelShape(params=int(sum(p.numel() for p in model.parameters())), layers=int(c.num_hidden_layers),
                      attn_dim=heads * head_dim)


def shape_from_dir(model_dir: str) -> ModelShape:
    """The shape of the model in an HF directory, counted on the meta device (no weights are read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return shape_of(model)


def forward_flops(shape: ModelShape, start: int, n: int) -> float:
    """FLOPs of one forward over n tokens at positions start .. start+n-1: 2·N·n + 4·L·d·Σp."""
    if n <= 0:
        return 0.0
    pos_sum = n * start + n * (n - 1) / 2
    return 2.0 * shape.params * n + 4.0 * shape.layers * shape.attn_dim * pos_sum


def _groups(trajs: Sequence[Trajectory]) -> dict[int, int]:
    """group id → prompt length (the first member's)."""
    out: dict[int, int] = {}
    for t in trajs:
        out.setdefault(t.group_id, len(t.prompt_ids))
    return out


def rollout_flops(shape: ModelShape, trajs: Sequence[Trajectory]) -> float:
    """Generation FLOPs: one prefill per group, every response token once at its position."""
    prefill = sum(forward_flops(shape, 0, p) for p in _groups(trajs).values())
    return prefill + sum(forward_flops(shape, len(t.prompt_ids), len(t.response_ids)) for t in trajs)


def batch_forward(shape: ModelShape, trajs: Sequence[Trajectory], shared_prompts: bool) -> tuple[float, int]:
    """(FLOPs, tokens) of one forward of a learner batch (prompts once per group when shared)."""
    flops = sum(forward_flops(shape, len(t.prompt_ids), len(t.response_ids)) for t in trajs)
    tokens = sum(len(t.response_ids) for t in trajs)
    prompts = list(_groups(trajs).values()) if shared_prompts else [len(t.prompt_ids) for t in trajs]
    return flops + sum(forward_flops(shape, 0, p) for p in prompts), tokens + sum(prompts)


def update_flops(shape: ModelShape, kept: Sequence[Trajectory], *, epochs: int, shared_prompts: bool,
                 forward_only_passes: int, critic: bool) -> tuple[float, int]:
    """(FLOPs, trained tokens) of the update phase. forward_only_passes: whole-batch forwards before the epochs
    (reference, critic values, off-policy old log-probs). The critic has the policy's backbone (the same shape)."""
    if not kept:
        return 0.0, 0
    fwd, tokens = batch_forward(shape, kept, shared_prompts)
    trained_models = 2 if critic else 1
    return fwd * (forward_only_passes + 3 * epochs * trained_models), tokens * epochs


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its reaped children so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass(frozen=True)
class ComputeTotals:
    """Cumulative compute since step 0. Saved in each checkpoint's state, so a resumed run continues exactly."""

    flops: float = 0.0
    tokens: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def add(self, flops: float, tokens: int, seconds: float, cpu: float) -> "ComputeTotals":
        return ComputeTotals(self.flops + flops, self.tokens + tokens, self.seconds + seconds,
                             self.cpu_seconds + cpu)

    def row(self, params: int) -> dict[str, float]:
        return {"compute/flops": self.flops, "compute/tokens": float(self.tokens), "compute/seconds": self.seconds,
                "compute/cpu_seconds": self.cpu_seconds, "model/params": float(params)}

    def state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, d: dict | None) -> "ComputeTotals":
        return cls(**d) if d else cls()

