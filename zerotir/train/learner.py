"""The learner: the trainable models and their optimizers. It runs forwards and optimizer steps, nothing else.

    learner = Learner(cfg)                        # loads cfg.model.path (any local HF causal LM)
    learner.logprobs(batch)                       # [B, R] current policy, no grad (also ref_logprobs, values)
    stats = learner.update(minibatch)             # exactly one optimizer step; loss/* and optim/* metric names
    engine.update_weights(learner.policy_state_dict(), version)

Where the rest lives: the objective (which terms, which weights) is `algos.losses.rl_objective`; the update phase
(collate → reference log-probs / values → advantages → PPO epochs x minibatches) is `train.update`; micro-batch
planning `train.micro`; building models and optimizers `train.build`; weight and checkpoint I/O `train.weights`.

Logits predicting response token t sit at column P - 1 + t (prompts left-padded to P, responses right-padded).
Log-probs and entropy are those of the distribution the rollout sampled from (`train.logprobs`: the rollout's
temperature and its top-k / top-p truncation, renormalised), so PPO's ratio is exactly 1 on-policy. The reference
policy gets the same treatment (the KL is 0 before the first step).

update() accumulates gradients over micro-batches weighted so that their sum is the gradient of the loss aggregated
over the whole minibatch. With train.share_prompt_forward (default) a prompt's rows stay in one micro-batch and
`shared_prompt_logits` runs each distinct prompt once, its responses attending to its keys/values: the same
log-probs and gradients as one row per response, for U·P + B·R instead of B·(P + R) tokens (U distinct prompts).

Data parallelism is a collaborator given at construction (`data_parallel`, e.g. `distributed.dp.RankShare`):
`update` trains on `shard(minibatch)`, calls the collaborator as the gradient sync after the last backward and
before clipping (policy, then critic), and returns `combine(stats)`. Nothing is passed at call time.

With train.learner_sharding 'fsdp' the policy, critic and reference are FSDP2-sharded over those ranks
(`train.sharding`): each rank's loss is scaled by its share and FSDP's reduce-scatter sums the gradients (no
all-reduce), the micro-batch count is padded to the ranks' maximum, and weight I/O gathers or shards.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Protocol

import torch

from zerotir.algos.losses import LossInputs, entropy_from_logits, rl_objective
from zerotir.config import Config
from zerotir.train import sharding, weights
from zerotir.train.build import accepts_logits_to_keep, make_critic, make_optimizer, prepare_train_mode, wrap_lora
from zerotir.train.logprobs import SamplingDistribution, token_logprobs
from zerotir.train.micro import micro_batches, per_row, position_ids_from_mask, trim_batch
from zerotir.train.shared_prefix import prompt_keys, shared_prompt_logits
from zerotir.types import TrainBatch



class DataParallel(Protocol):
    """A rank's part in data-parallel updates (implemented by `distributed.dp.RankShare`)."""

    weight: float   # this rank's share n_r / N of the last minibatch (set by `shard`)

    def shard(self, minibatch: TrainBatch) -> TrainBatch: ...

    def __call__(self, params: list[torch.nn.Parameter]) -> None: ...     # all-reduce the gradients

    def combine(self, stats: dict[str, float]) -> dict[str, float]: ...

# metric name ← LossStats field; the first set is aggregated like the loss, the second are per-token means
_LOSS_TERMS = (("loss/policy", "policy"), ("loss/entropy", "entropy"), ("loss/kl", "kl"), ("loss/value", "value"),
               ("loss/total", "total"))
_TOKEN_MEANS = (("loss/clip_fraction", "clip_fraction"), ("loss/is_ratio_mean", "is_ratio_mean"),
                ("loss/approx_kl_behaviour", "approx_kl"), ("loss/tis_clip_fraction", "tis_clip_fraction"))


class Learner:
    """Policy (+ frozen reference when algo.kl_coef > 0, + critic for gae) and their optimizers."""

    def __init__(self, cfg: Config, total_updates: int | None = None, model: Any = None, tokenizer: Any = None,
                 data_parallel: DataParallel | None = None):
        from zerotir.models import load_model_and_tokenizer, pick_device

        self.cfg = cfg
        self.device = torch.device(pick_device(cfg.model.device))
        if model is None:
            model, tokenizer = load_model_and_tokenizer(cfg.model.path, str(self.device), cfg.model.dtype)
        self.tokenizer = tokenizer
        self.dist = SamplingDistribution.of(cfg.rollout)
        self.lora = cfg.model.lora_rank > 0
        self.use_kl = cfg.algo.kl_coef > 0
        self.sharded = sharding.enabled(cfg)
        if self.sharded:
            sharding.check_supported(cfg, data_parallel)
        # Frozen reference only when a KL term is used; with LoRA the base weights (adapter off) are the reference.
        self.ref = copy.deepcopy(model).eval().requires_grad_(False) if self.use_kl and not self.lora else None
        if self.lora:
            model = wrap_lora(model, cfg.model)
        prepare_train_mode(model, cfg.model.gradient_checkpointing)
        self.policy = model
        if self.sharded:
            offload = cfg.train.fsdp_cpu_offload
            sharding.shard_model(model, self.device, offload)
            if self.ref is not None:
                sharding.shard_model(self.ref, self.device, offload, trainable=False)
        self._keep_ok = accepts_logits_to_keep(model)
        # HF turns the cache off under gradient checkpointing, and the shared-prompt forward passes keys through it;
        # its 4D masks need an attention that takes them (sdpa, eager; not flash-attention's padding-only masks)
        attn = getattr(model.config, "_attn_implementation", None) or "sdpa"
        # FSDP: off, since ranks must run equal forward counts and a shared-prompt micro-batch runs two
        self.share_prompt = (cfg.train.share_prompt_forward and not cfg.model.gradient_checkpointing
                             and attn in ("sdpa", "eager") and not self.sharded)
        self._mask_dtype = torch.bfloat16 if cfg.model.autocast_bf16 else next(model.parameters()).dtype
        self.dp = data_parallel
        o = cfg.optim
        total = total_updates or max(1, cfg.train.steps * cfg.train.ppo_epochs * cfg.train.minibatches)
        self.optimizer, self.scheduler = make_optimizer([p for p in model.parameters() if p.requires_grad], o, o.lr,
                                                        total)
        self.critic = self.critic_optimizer = self.critic_scheduler = None
        if cfg.algo.name == "gae":
            self.critic = make_critic(cfg.model).to(self.device)
            if self.sharded:
                sharding.shard_model(self.critic, self.device, cfg.train.fsdp_cpu_offload)
            self.critic_optimizer, self.critic_scheduler = make_optimizer(self.critic.parameters(), o, o.critic_lr,
                                                                          total)
        self.updates = 0

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def _autocast(self):
        if self.cfg.model.autocast_bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------------------------------------ forwards
    def response_logits(self, model, mb: TrainBatch) -> torch.Tensor:
        """[b, R, V] model logits predicting each response token (only the positions needed are projected)."""
        if self.share_prompt and _has_shared_prompts(mb):
            with self._autocast():
                return shared_prompt_logits(model, mb.prompt_ids, mb.prompt_mask, mb.response_ids, self._mask_dtype,
                                            self._keep_ok)
        ids, attn, pos = _inputs(mb)
        r = mb.response_ids.shape[1]
        kw = {"logits_to_keep": r + 1} if self._keep_ok else {}
        with self._autocast():
            logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False, **kw).logits
        return logits[:, -(r + 1):-1]

    def _sampling_logits(self, model, mb: TrainBatch) -> torch.Tensor:
        """[b, R, V] float32 logits of the distribution the rollout sampled from (log-softmax = its log-probs)."""
        return self.dist.logits(self.response_logits(model, mb), mb.response_ids)

    def _rows(self, batch: TrainBatch, fn: Callable[[TrainBatch], torch.Tensor]) -> torch.Tensor:
        return per_row(batch.to(self.device), fn, self.cfg.train.micro_batch_tokens, self.share_prompt).cpu()

    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """[B, R] current-policy log-probs of the response tokens (no grad)."""
        return self._rows(batch, lambda mb: token_logprobs(self._sampling_logits(self.policy, mb), mb.response_ids))

    def ref_logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """[B, R] reference-policy log-probs (the initial weights; LoRA: adapter disabled)."""
        if not self.use_kl:
            raise RuntimeError("ref_logprobs: no reference model (algo.kl_coef is 0)")
        if self.lora:
            with self.policy.disable_adapter():
                return self.logprobs(batch)
        return self._rows(batch, lambda mb: token_logprobs(self._sampling_logits(self.ref, mb), mb.response_ids))

    def _values(self, mb: TrainBatch) -> torch.Tensor:
        ids, attn, pos = _inputs(mb)
        r = mb.response_ids.shape[1]
        with self._autocast():
            v = self.critic(ids, attn, pos, keep=r + 1)
        return v[:, :-1]

    def values(self, batch: TrainBatch) -> torch.Tensor:
        """[B, R] critic values V(s_t) of the state before each response token (GAE only)."""
        if self.critic is None:
            raise RuntimeError("values: no critic (algo.name is not 'gae')")
        return self._rows(batch, self._values)

    # -------------------------------------------------------------------------------------------------- update
    def _loss_inputs(self, mb: TrainBatch) -> LossInputs:
        logits = self._sampling_logits(self.policy, mb)      # one fp32 copy serves the log-probs and the entropy
        with torch.set_grad_enabled(self.cfg.algo.entropy_coef > 0 and torch.is_grad_enabled()):
            entropy = entropy_from_logits(logits)
        v = self._values(mb) if self.critic is not None else None
        return LossInputs(logprobs=token_logprobs(logits, mb.response_ids), behaviour_logprobs=mb.behaviour_logprobs,
                          advantages=mb.advantages, mask=mb.loss_mask, entropy=entropy,
                          proximal_logprobs=mb.proximal_logprobs, ref_logprobs=mb.ref_logprobs if self.use_kl else None,
                          values=v, old_values=None if v is None else mb.values,
                          returns=None if v is None else mb.returns)

    def update(self, batch: TrainBatch) -> dict[str, float]:
        """One optimizer step on `batch` (advantages filled in; data-parallel: this rank's share of it), accumulated
        over micro-batches. Returns loss/* and optim/* metrics (data-parallel: combined over the ranks)."""
        a = self.cfg.algo
        if batch.advantages is None:
            raise ValueError("update: batch.advantages is None (run compute_advantages first)")
        if self.dp is not None:
            batch = self.dp.shard(batch)
        batch = trim_batch(batch.to(self.device))
        norm_tokens, norm_rows = float(batch.loss_mask.sum().clamp(min=1)), float(batch.size)
        mbs, _ = micro_batches(batch, self.cfg.train.micro_batch_tokens, self.share_prompt)
        # sharded: FSDP sums the ranks' gradients, so each rank's loss carries its share; ranks with fewer
        # micro-batches run zero-weight passes so that every rank runs the same collectives
        rank_w = self.dp.weight if self.sharded else 1.0
        n_pad = sharding.pad_count(len(mbs), self.device) - len(mbs) if self.sharded else 0
        self.policy.zero_grad(set_to_none=True)
        if self.critic is not None:
            self.critic.zero_grad(set_to_none=True)
        sums = dict.fromkeys([k for k, _ in _LOSS_TERMS + _TOKEN_MEANS], 0.0)
        ratio_max, adv_vals = 0.0, []
        for mb in mbs:
            # token_mean normalises by all sampled tokens of the minibatch; sequence modes by its rows. With these
            # weights the accumulated gradient equals that of the loss aggregated over the whole minibatch.
            wt = float(mb.loss_mask.sum()) / norm_tokens
            w = wt if a.loss_agg == "token_mean" else mb.size / norm_rows
            loss, st = rl_objective(self._loss_inputs(mb), a)
            (loss * (w * rank_w)).backward()
            for (k, f), weight in [(t, w) for t in _LOSS_TERMS] + [(t, wt) for t in _TOKEN_MEANS]:
                sums[k] += getattr(st, f) * weight
            ratio_max = max(ratio_max, st.is_ratio_max)
            adv_vals.append(mb.advantages[mb.loss_mask.bool()])
        for _ in range(n_pad):
            self._idle_pass(mbs[0].select([0]) if mbs else batch.select([0]))
        grad_norm, lr = self._step(self.dp)
        adv = torch.cat(adv_vals) if adv_vals else torch.zeros(1)
        stats = {**sums, "optim/lr": lr, "loss/is_ratio_max": ratio_max, "loss/advantage_mean": float(adv.mean()),
                 "loss/advantage_std": float(adv.std()) if adv.numel() > 1 else 0.0, "optim/grad_norm": grad_norm}
        return stats if self.dp is None else self.dp.combine(stats)

    def _idle_pass(self, mb: TrainBatch) -> None:
        """A forward + backward with zero weight (FSDP: runs this rank's share of the collectives, adds nothing)."""
        out = self.response_logits(self.policy, mb).float().sum()
        if self.critic is not None:
            out = out + self._values(mb).sum()
        (out * 0.0).backward()

    def _step(self, grad_sync: DataParallel | None) -> tuple[float, float]:
        """Sync, clip and step the policy (then the critic). Returns (policy grad norm before clipping, its lr)."""
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
        params = [p for p in self.policy.parameters() if p.requires_grad]
        if self.sharded:        # FSDP's reduce-scatter has summed the share-weighted gradients already
            grad_sync = None
        if grad_sync is not None:
            grad_sync(params)
        grad_norm = sharding.grad_norm_value(torch.nn.utils.clip_grad_norm_(params, clip))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.critic is not None:
            if grad_sync is not None:
                grad_sync(list(self.critic.parameters()))
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), clip)
            self.critic_optimizer.step()
            self.critic_scheduler.step()
            self.critic_optimizer.zero_grad(set_to_none=True)
        self.updates += 1
        return grad_norm, lr

    # ----------------------------------------------------------------------------- weight I/O (train/weights.py)
    def policy_state_dict(self) -> dict[str, torch.Tensor]:
        """Plain HF-named weights of the current policy, for engine sync (LoRA: merged copies)."""
        return weights.policy_state_dict(self)

    def save_policy(self, out_dir) -> None:
        """The policy (merged, for LoRA) and tokenizer as an HF model directory."""
        weights.save_policy(self, out_dir)

    def load_policy(self, model_dir) -> None:
        """Load weights saved by `save_policy` (full fine-tuning) into the policy in place."""
        weights.load_policy(self, model_dir)

    def trainer_state(self) -> dict[str, Any]:
        """Optimizer/scheduler/critic (and LoRA adapter) state for checkpoints."""
        return weights.trainer_state(self)

    def load_trainer_state(self, st: dict[str, Any]) -> None:
        weights.load_trainer_state(self, st)


def _inputs(mb: TrainBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.cat([mb.prompt_ids, mb.response_ids], dim=1)
    attn = torch.cat([mb.prompt_mask, mb.response_mask], dim=1)
    return ids, attn, position_ids_from_mask(attn)


def _has_shared_prompts(mb: TrainBatch) -> bool:
    return mb.size > 1 and len(set(prompt_keys(mb.prompt_ids, mb.prompt_mask))) < mb.size
