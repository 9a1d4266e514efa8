"""Token sampling as pure functions of tensors (temperature, top-k, top-p), returning the log-probs of the
distribution actually sampled from and the raw model log-probs.

Shapes: logits [B, V] (float32), temperature/top_p [B] float, top_k [B] long, uniforms [B, V] in (0, 1).
"""

from __future__ import annotations

import torch


def filter_logits(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
                  top_p: torch.Tensor) -> torch.Tensor:
    """Tempered logits with the tokens outside top-k / the top-p nucleus set to -inf. [B, V] → [B, V].

    Rows with temperature <= 0 are left untempered (greedy rows are handled by `sample_from_logits`). top-k is applied
    first, then top-p on the renormalised top-k distribution (the order HF's warpers use); the most likely token is
    always kept.
    """
    t = torch.where(temperature > 0, temperature, torch.ones_like(temperature))
    scaled = logits / t[:, None]
    need_k = bool((top_k > 0).any())
    need_p = bool((top_p < 1.0).any())
    if not (need_k or need_p):
        return scaled
    vocab = logits.shape[-1]
    sorted_l, order = scaled.sort(dim=-1, descending=True)
    rank = torch.arange(vocab, device=logits.device)[None, :]
    k = torch.where(top_k > 0, top_k, torch.full_like(top_k, vocab))
    sorted_l = sorted_l.masked_fill(rank >= k[:, None], float("-inf"))
    if need_p:
        probs = sorted_l.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        drop = (mass_before >= top_p[:, None]) & (rank > 0)
        sorted_l = sorted_l.masked_fill(drop, float("-inf"))
    return torch.full_like(scaled, float("-inf")).scatter(1, order, sorted_l)


def sample_from_logits(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                       uniforms: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample one token per row. Returns (tokens [B] long, logprobs [B], raw_logprobs [B]).

    Sampling is Gumbel-max over the filtered log-probs with the given uniforms (so a per-request RNG fully decides
    the draw). Greedy rows (temperature <= 0) take the argmax; their `logprobs` are the untempered log-probs.
    """
    logits = logits.float()
    raw = logits.log_softmax(dim=-1)
    greedy = temperature <= 0
    if bool(greedy.all()) or uniforms is None:
        tokens = logits.argmax(dim=-1)
        lp = raw.gather(1, tokens[:, None])[:, 0]
        return tokens, lp, lp.clone()
    filt = filter_logits(logits, temperature, top_k, top_p).log_softmax(dim=-1)
    gumbel = -torch.log(-torch.log(uniforms.clamp(1e-20, 1.0 - 1e-7)))
    sampled = (filt + gumbel).argmax(dim=-1)
    tokens = torch.where(greedy, logits.argmax(dim=-1), sampled)
    raw_lp = raw.gather(1, tokens[:, None])[:, 0]
    lp = torch.where(greedy, raw_lp, filt.gather(1, tokens[:, None])[:, 0])
    return tokens, lp, raw_lp
