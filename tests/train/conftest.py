import random

import pytest
import torch

from zerotir.config import Config
from zerotir.types import Segment, Trajectory, collate


def tiny_cfg(model_dir, **over) -> Config:
    cfg = Config()
    cfg.model.path = str(model_dir)
    cfg.model.device = "cpu"
    cfg.optim.lr = 1e-2
    cfg.optim.grad_clip = 0.0
    for k, v in over.items():
        sec, key = k.split("__")
        setattr(getattr(cfg, sec), key, v)
    return cfg


def _trajectory(rng: random.Random, vocab: int, prompt: list[int], lr: int, tool: bool, group: int,
                sample: int) -> Trajectory:
    """A response of lr random tokens; with `tool` (and lr >= 6) tokens 2..3 are an inserted tool segment (mask 0)."""
    resp = [rng.randrange(2, vocab) for _ in range(lr)]
    mask = [1] * lr
    segs = [Segment("model", 0, lr)]
    if lr >= 6 and tool:
        mask[2:4] = [0, 0]
        segs = [Segment("model", 0, 2), Segment("tool", 2, 4), Segment("model", 4, lr)]
    lps = [(-rng.random() * 3 if m else 0.0) for m in mask]
    t = Trajectory(problem_id=f"p{group}", prompt_ids=prompt, response_ids=resp, loss_mask=mask, logprobs=lps,
                   raw_logprobs=list(lps), segments=segs, group_id=group, sample_index=sample,
                   reward=float(rng.random() > 0.5))
    t.validate()
    return t


def random_trajs(n: int, vocab: int, seed: int = 0, pad_id: int = 1) -> list[Trajectory]:
    """Trajectories of varied prompt/response lengths with a tool segment (mask 0) in the middle of some."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lp, lr = rng.randint(2, 9), rng.randint(3, 14)
        prompt = [rng.randrange(2, vocab) for _ in range(lp)]
        out.append(_trajectory(rng, vocab, prompt, lr, i % 2 == 0, i // 2, i % 2))
    return out


@pytest.fixture
def tiny_batch(tiny_model_dir):
    from zerotir.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    trajs = random_trajs(6, len(tok), seed=1)
    b = collate(trajs, tok.pad_token_id)
    g = torch.Generator().manual_seed(0)
    b.advantages = torch.randn(b.response_ids.shape, generator=g) * b.loss_mask
    return trajs, b


def grouped_trajs(n_prompts: int, group: int, vocab: int, seed: int = 0) -> list[Trajectory]:
    """`group` responses per prompt (GRPO-shaped), prompts of different lengths, some responses with a tool
    segment (mask 0) in the middle."""
    rng = random.Random(seed)
    out = []
    for g in range(n_prompts):
        prompt = [rng.randrange(2, vocab) for _ in range(rng.randint(3, 12))]
        out += [_trajectory(rng, vocab, prompt, rng.randint(1, 14), k % 2 == 0, g, k) for k in range(group)]
    return out


@pytest.fixture
def grouped_batch(tiny_model_dir):
    from zerotir.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    trajs = grouped_trajs(3, 4, len(tok), seed=2)
    b = collate(trajs, tok.pad_token_id)
    g = torch.Generator().manual_seed(0)
    b.advantages = torch.randn(b.response_ids.shape, generator=g) * b.loss_mask
    return trajs, b
