"""Log-probs of response tokens under the distribution the rollout sampled from.

The rollout samples each token from softmax(filter_logits(logits, T, top_k, top_p)) (`zerotir.rollout.sampling`),
and its behaviour log-probs are log-probs of that distribution: tempered, truncated to top-k / the top-p nucleus,
renormalised over the tokens kept. PPO's ratio p_learner / p_behaviour is 1 on-policy only when the learner uses
the same distribution. With the temperature alone (as before), top_p = 0.9 skewed the ratio at the first,
on-policy update (measured: ratio mean 0.980, 0.5% of tokens clipped).

So the learner's logits are `SamplingDistribution.logits`: the same temperature, and the same truncation set,
decided by the sampler's own `filter_logits` (one implementation of top-k/top-p). The set is chosen without
gradient, as sampling chooses it; the kept tokens' logits carry the gradient, renormalised by the log-softmax.
The sampled token is always kept: it was in the sampler's set, and a float-rounding difference between the
engine's and the learner's forward at the nucleus edge must not give it probability 0 (ratio 0, infinite KL).
Greedy rollouts (temperature <= 0) report untempered, untruncated log-probs, and so does the learner for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from zerotir.rollout.sampling import filter_logits

MASKED_LOGIT = -1e9
"""A finite stand-in for -inf outside the truncation set: exp underflows to exactly 0, and 0 · logit stays 0 in the
entropy (0 · -inf would be NaN)."""
_CHUNK_ELEMENTS = 1 << 26
"""Logit elements per `filter_logits` call: its sort copies are transient, this bounds them (~1 GB)."""


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T)[token]: logits [B, R, V], tokens [B, R] → [B, R] float32.
    Uses logits[token] - logsumexp(logits) so no [B, R, V] log-softmax copy is kept."""
    x = logits.float()
    if temperature > 0 and temperature != 1.0:
        x = x / temperature
    return x.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(x, dim=-1)


@dataclass(frozen=True)
class SamplingDistribution:
    """The rollout's sampling settings, as the learner applies them to its logits."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    @classmethod
    def of(cls, rollout_cfg) -> "SamplingDistribution":
        """From a `RolloutConfig`; greedy (temperature <= 0) means the untempered, untruncated distribution."""
        if rollout_cfg.temperature <= 0:
            return cls()
        return cls(float(rollout_cfg.temperature), int(rollout_cfg.top_k), float(rollout_cfg.top_p))

    @property
    def truncates(self) -> bool:
        return self.top_k > 0 or self.top_p < 1.0

    def logits(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """[..., V] model logits, [...] sampled tokens → [..., V] float32 logits of the sampling distribution
        (log-softmax of them = its log-probs). Without truncation this is logits / T and costs nothing more."""
        x = logits.float()
        scaled = x / self.temperature if self.temperature != 1.0 else x
        if not self.truncates:
            return scaled
        keep = self.keep_mask(x.detach(), tokens)
        return torch.where(keep, scaled, torch.full((), MASKED_LOGIT, dtype=scaled.dtype, device=scaled.device))

    @torch.no_grad()
    def keep_mask(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """[..., V] bool: the sampler's truncation set per position (`filter_logits`), plus the sampled token."""
        v = logits.shape[-1]
        flat, toks = logits.reshape(-1, v), tokens.reshape(-1)
        keep = torch.empty(flat.shape, dtype=torch.bool, device=flat.device)
        step = max(1, _CHUNK_ELEMENTS // v)
        for s in range(0, flat.shape[0], step):
            rows = flat[s:s + step]
            n = rows.shape[0]
            kept = filter_logits(rows, torch.full((n,), self.temperature, device=rows.device),
                                 torch.full((n,), self.top_k, dtype=torch.long, device=rows.device),
                                 torch.full((n,), self.top_p, device=rows.device))
            keep[s:s + step] = kept > float("-inf")
        keep[torch.arange(flat.shape[0], device=flat.device), toks] = True
        return keep.view(logits.shape)
