"""Prepared attention masks for HF decoder models, sliding-window layers included.

The engine's KV cache and the learner's shared-prompt forward pass their own 4D masks (HF uses them as-is). Sliding-
window layers (Mistral; Qwen2 with use_sliding_window; Gemma 3's local layers) must also hide keys at or beyond
`window` positions back, as HF's own masks do (key j is seen by query i iff i - window < j <= i); models whose layers
differ get a {layer type: mask} mapping, which HF models with `config.layer_types` accept.

Shapes: allowed [B, q, k] bool (causal and padding rules already applied), q_pos [B, q] and k_pos [B, k] absolute
positions; masks out [B, 1, q, k] additive (0 = attend, dtype's min = hidden).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

SUPPORTED_LAYER_TYPES = ("full_attention", "sliding_attention")


def sliding_window(config: Any) -> int | None:
    """The sliding attention window some layer of the model uses, or None (every layer attends fully)."""
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if types is not None:
        unknown = sorted(set(types) - set(SUPPORTED_LAYER_TYPES))
        if unknown:
            raise ValueError(f"attention layer types {unknown} are not supported (only {SUPPORTED_LAYER_TYPES})")
        return window if "sliding_attention" in types else None
    if getattr(config, "use_sliding_window", True) is False:
        return None
    return window


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool [B, q, k] → additive [B, 1, q, k]."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)[:, None]


@dataclass(frozen=True)
class MaskPlan:
    """How a model's layers attend, read once from its config (`mask_plan`), so building masks per forward does no
    config work. window: the sliding window, None if every layer attends fully; per_layer_types: the model names a
    type per layer (`config.layer_types`), so it takes a {layer type: mask} mapping."""

    window: int | None
    per_layer_types: bool

    def build(self, allowed: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor,
              dtype: torch.dtype) -> torch.Tensor | dict[str, torch.Tensor]:
        """What to pass as `attention_mask`: one 4D mask when every layer attends alike, else {layer type: mask}."""
        if self.window is None:
            return additive_mask(allowed, dtype)
        sliding = additive_mask(allowed & (k_pos[:, None, :] > q_pos[:, :, None] - self.window), dtype)
        if not self.per_layer_types:
            return sliding                              # no per-layer types: every layer slides (Mistral)
        return {"full_attention": additive_mask(allowed, dtype), "sliding_attention": sliding}


def mask_plan(config: Any) -> MaskPlan:
    """The model's MaskPlan; refuses layer types it cannot mask."""
    return MaskPlan(sliding_window(config), getattr(config, "layer_types", None) is not None)
