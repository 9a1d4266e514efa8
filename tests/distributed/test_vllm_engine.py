"""vLLM engine. The `gpu` tests need CUDA and vLLM; on CPU machines they are skipped (reason shown by pytest -ra).
The first tests cover the pure conversion helpers, which need neither."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from zerotir.distributed.vllm_engine import _stops, finish_of, needs_raw_rescore, sampled_logprobs
from zerotir.rollout.engine import GenerationRequest, SamplingParams


@dataclass
class Lp:  # the shape of vllm.sequence.Logprob
    logprob: float


def test_finish_reason_mapping():
    assert finish_of("stop", None) == ("eos", None)          # EOS
    assert finish_of("stop", 151643) == ("eos", None)        # a stop token id
    assert finish_of("stop", "\n```") == ("stop", "\n```")   # a stop string
    assert finish_of("length", None) == ("length", None)
    assert finish_of("abort", None) == ("length", None)


def test_sampled_logprobs_picks_the_sampled_token_per_position():
    per_pos = [{5: Lp(-0.1), 9: Lp(-2.0)}, {7: Lp(-0.7)}]
    assert sampled_logprobs([5, 7], per_pos) == [-0.1, -0.7]


def test_rescore_needed_only_when_sampling_distribution_differs():
    assert not needs_raw_rescore(SamplingParams(temperature=1.0))
    assert not needs_raw_rescore(SamplingParams(temperature=0.0, top_k=5))  # greedy reports raw already
    assert needs_raw_rescore(SamplingParams(temperature=0.7))
    assert needs_raw_rescore(SamplingParams(temperature=1.0, top_p=0.9))
    assert needs_raw_rescore(SamplingParams(temperature=1.0, top_k=20))


def test_code_block_stop_becomes_a_plain_stop_string():
    from zerotir.rollout.format import CODE_CLOSE

    assert _stops(SamplingParams(stop_strings=["</s>"])) == ["</s>"]
    assert _stops(SamplingParams(stop_strings=["</s>"], stop_at_code_block=True)) == ["</s>", CODE_CLOSE]
    assert _stops(SamplingParams(stop_strings=[CODE_CLOSE], stop_at_code_block=True)) == [CODE_CLOSE]


# ------------------------------------------------------------------------------------------------ GPU + vLLM


@pytest.fixture(scope="module")
def vllm_engine(tiny_model_dir):
    pytest.importorskip("vllm", reason="vLLM is not installed")
    from zerotir.distributed.vllm_engine import VLLMEngine

    return VLLMEngine(str(tiny_model_dir), seed=0,
                      engine_kwargs={"gpu_memory_utilization": 0.3, "max_model_len": 512, "enforce_eager": True})


def _prompt(engine) -> list[int]:
    return engine.tokenizer.encode("Question: what is 12 * 7?\nAnswer:")


@pytest.mark.gpu
def test_greedy_matches_hf_model(vllm_engine, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    ids = _prompt(vllm_engine)
    out = vllm_engine.generate([GenerationRequest("g", ids, SamplingParams(temperature=0.0, max_new_tokens=16))])[0]
    assert len(out.token_ids) == len(out.logprobs) == len(out.raw_logprobs) > 0
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    seq = torch.tensor([ids + out.token_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(seq).logits[0].float(), -1)
    n = len(ids)
    hf_greedy = logp[n - 1:-1].argmax(-1).tolist()
    ref = [float(logp[n - 1 + i, t]) for i, t in enumerate(out.token_ids)]
    assert out.token_ids[: len(hf_greedy)] == hf_greedy
    assert out.logprobs == pytest.approx(ref, abs=2e-2)


@pytest.mark.gpu
def test_stop_string_kept_and_reported(vllm_engine):
    ids = _prompt(vllm_engine)
    full = vllm_engine.generate([GenerationRequest("a", ids, SamplingParams(temperature=0.0, max_new_tokens=24))])[0]
    text = vllm_engine.tokenizer.decode(full.token_ids)
    stop = text[len(text) // 2: len(text) // 2 + 2]
    assert stop.strip(), "tiny model produced only whitespace; pick another prompt"
    out = vllm_engine.generate([GenerationRequest("b", ids, SamplingParams(temperature=0.0, max_new_tokens=24,
                                                                             stop_strings=[stop]))])[0]
    assert out.finish_reason == "stop" and out.stop_string == stop
    assert out.token_ids == full.token_ids[: len(out.token_ids)]
    assert stop in vllm_engine.tokenizer.decode(out.token_ids)


@pytest.mark.gpu
def test_tempered_logprobs_differ_from_raw(vllm_engine):
    ids = _prompt(vllm_engine)
    out = vllm_engine.generate([GenerationRequest("t", ids, SamplingParams(temperature=0.5, max_new_tokens=12,
                                                                             seed=3))])[0]
    assert len(out.raw_logprobs) == len(out.token_ids)
    assert any(abs(a - b) > 1e-3 for a, b in zip(out.logprobs, out.raw_logprobs))


@pytest.mark.gpu
def test_update_weights_in_place_changes_outputs_and_records_version(vllm_engine, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    ids = _prompt(vllm_engine)
    req = lambda rid: GenerationRequest(rid, ids, SamplingParams(temperature=0.0, max_new_tokens=8))  # noqa: E731
    before = vllm_engine.generate([req("w0")])[0]
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    vllm_engine.update_weights(model.state_dict(), version=7)
    assert vllm_engine.policy_version == 7
    after = vllm_engine.generate([req("w1")])[0]
    assert after.logprobs != before.logprobs
    vllm_engine.update_weights(original, version=8)
    again = vllm_engine.generate([req("w2")])[0]
    assert again.token_ids == before.token_ids
    assert again.logprobs == pytest.approx(before.logprobs, abs=1e-4)
