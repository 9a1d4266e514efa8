"""Loading the policy: any HF causal LM directory (config + weights + tokenizer), or 'toy' for the shipped toy base.

`load_model_and_tokenizer` checks the directory before loading and raises `ModelError` with one clear line
(missing dir, no config.json, no tokenizer, no weights) — before any training or eval work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TOY_BASE_DIR = Path(__file__).resolve().parents[1] / "assets" / "toy-base"


class ModelError(ValueError):
    """A model directory that cannot be used; the message names the directory and what is missing."""


TOY_BASE_PROVIDER = "zerotir.toy.cache:toy_base_path"
"""Who resolves toy names: 'module:function', imported on first use (see resolve_model_path)."""


def resolve_model_path(path: str) -> Path:
    """'toy' and 'toy-<size>' (e.g. 'toy-0.2m', 'toy-3m') → that toy base's directory: shipped in zerotir/assets, or
    in the user cache, built there on first use (zerotir.toy.cache). Anything else is a local directory ('~' is
    expanded); an existing directory wins over a toy name of the same spelling."""
    path = str(path)
    is_toy_name = path == "toy" or (path.startswith("toy-") and "/" not in path and not Path(path).exists())
    if not is_toy_name:
        return Path(path).expanduser()  # presets name the user cache as ~/.cache/zerotir/... (configs/real-cpu.yaml)
    # models sits below toy in the import table (toy imports models to load and build its bases), so models must not
    # import toy's code: the provider is named as data and imported on first use, as a plugin entry point would be.
    # Resolving other paths never touches it.
    import importlib

    module, _, func = TOY_BASE_PROVIDER.partition(":")
    return Path(getattr(importlib.import_module(module), func)(path))


def _not_found(spec: str, p: Path) -> str:
    """One line: a hub-id-looking spec ('Org/Name', nothing on disk) gets the commands that make it local."""
    parts = spec.split("/")
    if len(parts) == 2 and all(parts) and not spec.startswith((".", "~")) and not p.parent.exists():
        return (f"model.path '{spec}' looks like a Hugging Face hub id; zerotir loads local directories only (no "
                f"network at run time): run `huggingface-cli download {spec} --local-dir DIR` and pass "
                f"model.path=DIR, or turn a GGUF file into one with `zerotir models import-gguf FILE.gguf --out DIR`")
    return f"model directory not found: {p} (a local HF model directory, 'toy', or 'toy-<size>')"


def _policy_in(p: Path) -> Path | None:
    """The HF directory a training checkpoint or run directory holds: `CKPT/policy`, or the policy of a run's newest
    complete checkpoint (state.json written: the rule of train.checkpoint.list_checkpoints, which models may not
    import) — the trained model a user means when they pass either."""
    if (p / "policy" / "config.json").is_file():
        return p / "policy"
    done = [c for c in p.glob("checkpoints/step_*") if (c / "state.json").is_file() and (c / "policy").is_dir()]
    return max(done, key=lambda c: int(c.name.split("_")[1])) / "policy" if done else None


def check_model_dir(path: str | Path) -> Path:
    """The HF model directory `path` names (a directory, a toy name, a checkpoint or a run directory), checked for
    config, tokenizer and weights; raises ModelError naming what is missing."""
    p = resolve_model_path(str(path))
    if not p.is_dir():
        raise ModelError(_not_found(str(path), p))
    if not (p / "config.json").is_file():
        policy = _policy_in(p)
        if policy is None:
            raise ModelError(f"{p}: no config.json — not an HF model directory (nor a training checkpoint with "
                             f"policy/, nor a run directory with checkpoints/step_*/policy)")
        p = policy
    if not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")):
        raise ModelError(f"{p}: no tokenizer files (tokenizer.json / tokenizer.model / vocab.json)")
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise ModelError(f"{p}: no weights (*.safetensors or *.bin)")
    return p


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    p = check_model_dir(path)
    tok = AutoTokenizer.from_pretrained(str(p))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model_and_tokenizer(path: str | Path, device: str = "auto", dtype: str = "float32") -> tuple[Any, Any]:
    """Load (model, tokenizer) from a local directory, model in eval mode on `device`."""
    import torch
    from transformers import AutoModelForCausalLM

    p = check_model_dir(path)
    tok = load_tokenizer(p)
    # float64: for equivalence tests, where float32 rounding (amplified by Adam on near-zero gradients) would hide
    # whether two code paths compute the same thing
    param_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                   "float64": torch.float64}.get(dtype)
    if param_dtype is None:
        raise ModelError(f"unknown dtype '{dtype}' (float32, bfloat16, float16, float64)")
    model = AutoModelForCausalLM.from_pretrained(str(p), dtype=param_dtype)
    model.to(pick_device(device)).eval()
    return model, tok
