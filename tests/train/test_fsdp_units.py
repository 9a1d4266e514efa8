"""FSDP sharding helpers without a process group: settings refused with clear errors, which modules get their own
shard group, element counting, and checkpoints that refuse the other sharding setting. The 2-rank behaviour
(equivalence, memory, resume) is tests/distributed/test_fsdp.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from zerotir.config import Config
from zerotir.train import sharding
from zerotir.train.checkpoint import load_checkpoint


def test_unknown_mode_lora_and_no_process_group_are_refused():
    cfg = Config()
    assert not sharding.enabled(cfg)
    cfg.train.learner_sharding = "zero3"
    with pytest.raises(ValueError, match="train.learner_sharding.*'zero3'"):
        sharding.enabled(cfg)
    cfg.train.learner_sharding = "fsdp"
    assert sharding.enabled(cfg)
    with pytest.raises(ValueError, match="process group.*backend 'ray'"):
        sharding.check_supported(cfg, data_parallel=None)
    cfg.model.lora_rank = 8
    with pytest.raises(ValueError, match="lora_rank"):
        sharding.check_supported(cfg, data_parallel=None)


def test_decoder_layers_of_the_policy_and_the_critic(tiny_model_dir):
    from transformers import AutoModel, AutoModelForCausalLM

    from zerotir.train.build import ValueModel

    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    layers = sharding.decoder_layers(policy)
    assert [type(m).__name__ for m in layers] == ["Qwen2DecoderLayer"] * policy.config.num_hidden_layers
    assert layers[0] is policy.model.layers[0]
    critic = ValueModel(AutoModel.from_pretrained(tiny_model_dir), policy.config.hidden_size)
    assert sharding.decoder_layers(critic) == list(critic.backbone.layers)
    # no HF hint: the first ModuleList's children
    plain = torch.nn.Sequential(torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)]))
    assert len(sharding.decoder_layers(plain)) == 2


def test_element_counts_hand_checked():
    a, b = torch.zeros(3, 4), torch.zeros(5)
    assert sharding.local_numel([a, b]) == 17
    p = torch.nn.Parameter(torch.ones(3, 4))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.ones(3, 4)
    opt.step()
    assert sharding.optimizer_numel(opt) == (24, 24)    # exp_avg + exp_avg_sq, the scalar step left out
    assert sharding.grad_norm_value(torch.tensor(2.5)) == 2.5


@pytest.mark.parametrize("saved_sharded", [True, False])
def test_checkpoint_refuses_the_other_sharding_setting(tmp_path, saved_sharded):
    ckpt = tmp_path / "step_000001"
    ckpt.mkdir()
    (ckpt / "state.json").write_text(json.dumps({"step": 1}))
    if saved_sharded:
        (ckpt / "sharded").mkdir()
    learner = SimpleNamespace(sharded=not saved_sharded, lora=False)
    with pytest.raises(RuntimeError, match="learner_sharding 'fsdp'; resume with the same setting"):
        load_checkpoint(ckpt, learner)
