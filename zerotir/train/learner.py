"""The learner: policy (+ optional frozen reference, + critic for GAE), log-probs of response tokens, one
optimizer step per `update(batch)`.

    learner = Learner(cfg)                                   # loads cfg.model.path (any local HF causal LM)
    batch.ref_logprobs = learner.ref_logprobs(batch)         # only when algo.kl_coef > 0
    batch.values = learner.values(batch)                     # only for algo.name == 'gae'
    stats = learner.update(minibatch)                        # loss/*, optim/* metric names
    engine.update_weights(learner.policy_state_dict(), version)

Sequence layout (TrainBatch): prompt LEFT-padded to P columns, response RIGHT-padded to R columns, so the logits
predicting response token t sit at column P - 1 + t. Position ids come from the attention mask (cumsum - 1), so a
left-padded row sees the same positions as the unpadded sequence did at rollout.

Micro-batches: rows are sorted by real length and grouped so that rows x padded width <= train.micro_batch_tokens;
each micro-batch is trimmed to its own widths (no padding waste beyond the group's longest row). Gradients are
accumulated with weights that make the sum over micro-batches equal the loss aggregated over the whole minibatch.

Shared prompts (train.share_prompt_forward, default on): the planner keeps a prompt's rows in one micro-batch and
`shared_prompt_logits` runs each distinct prompt once, its responses attending to its keys/values — the same
log-probs and gradients as one row per response, for U·P + B·R instead of B·(P + R) tokens (U distinct prompts).

Log-probs are taken from logits / rollout.temperature, the same distribution the behaviour log-probs came from.

Off-policy batches (`off_policy(cfg)`: tis_cap > 0 and async staleness, a non-HF engine or several optimizer steps
per batch): the update phase sets old_logprobs = `learner.logprobs(batch)` once before the PPO epochs and
behaviour_logprobs = the rollout's; `update` then weights each token by min(old / behaviour, tis_cap). Otherwise
behaviour_logprobs is None and the rollout log-probs are the PPO old log-probs (no extra forward).
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from zerotir.config import Config
from zerotir.train.shared_prefix import prompt_keys, shared_prompt_logits
from zerotir.types import TrainBatch

# ----------------------------------------------------------------------------------------------- pure helpers


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L] 0/1 mask → [B, L] positions counting real tokens from 0 (pads get 0)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.clamp_(min=0) * attention_mask.long()


def trim_batch(batch: TrainBatch) -> TrainBatch:
    """Drop prompt columns that are padding in every row (left) and response columns padding in every row (right)."""
    pm = batch.prompt_mask.bool().any(0)
    first = int(pm.nonzero()[0]) if pm.any() else batch.prompt_mask.shape[1] - 1
    rm = batch.response_mask.bool().any(0)
    last = int(rm.nonzero()[-1]) + 1 if rm.any() else 1
    fields = {}
    for name in TrainBatch.__dataclass_fields__:
        v = getattr(batch, name)
        if v is None or v.dim() != 2:
            fields[name] = v
        elif name.startswith("prompt"):
            fields[name] = v[:, first:]
        else:
            fields[name] = v[:, :last]
    return TrainBatch(**fields)


def plan_micro_batches(prompt_lens: Sequence[int], response_lens: Sequence[int], max_tokens: int,
                       prompt_keys: Sequence[Any] | None = None) -> list[list[int]]:
    """Group row indices into micro-batches, longest first, so that each group's padded size stays within
    `max_tokens` (a row longer than that goes alone).

    Without prompt_keys the padded size is rows x (max prompt len + max response len). With prompt_keys (rows with
    equal keys share a prompt, run once by the shared-prompt forward) rows of one prompt are kept together and the
    size is distinct prompts x max prompt len + rows x max response len.
    Sorting by length keeps rows of similar length together, which is where the padding waste goes away."""
    n = len(prompt_lens)
    keys = list(range(n)) if prompt_keys is None else list(prompt_keys)
    key_no: dict[Any, int] = {}     # keys by first appearance: a stable tie-break that keeps a prompt's rows adjacent
    longest: dict[Any, int] = {}
    for i in range(n):
        key_no.setdefault(keys[i], len(key_no))
        longest[keys[i]] = max(longest.get(keys[i], 0), prompt_lens[i] + response_lens[i])
    order = sorted(range(n), key=lambda i: (-longest[keys[i]], key_no[keys[i]], -(prompt_lens[i] + response_lens[i]),
                                            i))
    groups: list[list[int]] = []
    cur: list[int] = []
    cur_keys: set[Any] = set()
    mp = mr = 0
    for i in order:
        np_, nr = max(mp, prompt_lens[i]), max(mr, response_lens[i])
        nk = len(cur_keys | {keys[i]})
        size = nk * np_ + (len(cur) + 1) * nr if prompt_keys is not None else (len(cur) + 1) * (np_ + nr)
        if cur and size > max_tokens:
            groups.append(cur)
            cur, cur_keys, np_, nr = [], set(), prompt_lens[i], response_lens[i]
        cur.append(i)
        cur_keys.add(keys[i])
        mp, mr = np_, nr
    if cur:
        groups.append(cur)
    return groups


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T)[token]: logits [B, R, V], tokens [B, R] → [B, R] float32.
    Uses logits[token] - logsumexp(logits) so no [B, R, V] log-softmax copy is kept."""
    x = logits.float()
    if temperature > 0 and temperature != 1.0:
        x = x / temperature
    return x.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(x, dim=-1)


def lr_lambda(schedule: str, warmup: int, total: int):
    """LR multiplier per optimizer step: linear warm-up over `warmup` steps, then constant / cosine / linear to 0."""
    if schedule not in ("constant", "cosine", "linear"):
        raise ValueError(f"optim.schedule: unknown schedule '{schedule}' (constant, cosine, linear)")

    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        frac = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * frac)) if schedule == "cosine" else 1.0 - frac

    return f


def off_policy(cfg: Config) -> bool:
    """Whether the update phase should recompute old log-probs with the learner and correct the rollout's
    (behaviour) log-probs by truncated importance sampling: algo.tis_cap > 0 and the batch may come from another
    policy than the learner's current one — async rollouts (staleness > 0), an engine other than the learner's own
    forward (vLLM), or several optimizer steps per batch (ppo_epochs x minibatches > 1). Otherwise the rollout
    log-probs are the PPO old log-probs and no extra forward runs."""
    t = cfg.train
    return cfg.algo.tis_cap > 0 and ((t.async_rollout and t.max_staleness > 0) or cfg.rollout.engine != "hf"
                                     or t.ppo_epochs * t.minibatches > 1)


# ----------------------------------------------------------------------------------------------------- critic


class ValueModel(nn.Module):
    """Critic: the policy's backbone architecture (own copy of the weights) + a linear value head."""

    def __init__(self, backbone: nn.Module, hidden_size: int):
        super().__init__()
        self.backbone = backbone
        self.value_head = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.value_head.weight, std=1.0 / math.sqrt(hidden_size + 1))
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask, position_ids, keep: int) -> torch.Tensor:
        """[B, L] ids → [B, keep] values of the last `keep` positions."""
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False).last_hidden_state[:, -keep:]
        return self.value_head(h.to(self.value_head.weight.dtype)).squeeze(-1).float()


# ---------------------------------------------------------------------------------------------------- learner


class Learner:
    """Owns the trainable models and their optimizers. `update` = one optimizer step on one minibatch."""

    def __init__(self, cfg: Config, total_updates: int | None = None, model: Any = None, tokenizer: Any = None):
        from zerotir.models import load_model_and_tokenizer, pick_device

        self.cfg = cfg
        self.device = torch.device(pick_device(cfg.model.device))
        if model is None:
            model, tokenizer = load_model_and_tokenizer(cfg.model.path, str(self.device), cfg.model.dtype)
        self.tokenizer = tokenizer
        self.temperature = cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0
        self.lora = cfg.model.lora_rank > 0
        self.use_kl = cfg.algo.kl_coef > 0
        # Frozen reference only when a KL term is used; with LoRA the base weights (adapter off) are the reference.
        self.ref = None
        if self.use_kl and not self.lora:
            self.ref = copy.deepcopy(model).eval().requires_grad_(False)
        if self.lora:
            model = self._wrap_lora(model)
        self._prepare_train_mode(model)
        self.policy = model
        self._keep_ok = _accepts_logits_to_keep(model)
        # HF turns the cache off under gradient checkpointing, and the shared-prompt forward passes keys through it;
        # its 4D masks need an attention that takes them (sdpa, eager; not flash-attention's padding-only masks)
        attn = getattr(model.config, "_attn_implementation", None) or "sdpa"
        self.share_prompt = (cfg.train.share_prompt_forward and not cfg.model.gradient_checkpointing
                             and attn in ("sdpa", "eager"))
        self._mask_dtype = torch.bfloat16 if cfg.model.autocast_bf16 else next(model.parameters()).dtype

        self.critic: ValueModel | None = None
        if cfg.algo.name == "gae":
            self.critic = self._make_critic().to(self.device)
        o = cfg.optim
        total = total_updates or max(1, cfg.train.steps * cfg.train.ppo_epochs * cfg.train.minibatches)
        sched = lr_lambda(o.schedule, o.warmup_steps, total)
        self.optimizer = torch.optim.AdamW([p for p in self.policy.parameters() if p.requires_grad], lr=o.lr,
                                           betas=tuple(o.betas), weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, sched)
        self.critic_optimizer = self.critic_scheduler = None
        if self.critic is not None:
            self.critic_optimizer = torch.optim.AdamW(self.critic.parameters(), lr=o.critic_lr, betas=tuple(o.betas),
                                                      weight_decay=o.weight_decay)
            self.critic_scheduler = torch.optim.lr_scheduler.LambdaLR(self.critic_optimizer, sched)
        self.updates = 0

    # ------------------------------------------------------------------------------------------------- setup
    def _wrap_lora(self, model):
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise RuntimeError("model.lora_rank > 0 needs PEFT: pip install 'zerotir[peft]'") from None
        m = self.cfg.model
        lcfg = LoraConfig(r=m.lora_rank, lora_alpha=m.lora_alpha, target_modules=list(m.lora_target_modules),
                          lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
        return get_peft_model(model, lcfg)

    def _prepare_train_mode(self, model) -> None:
        # RL log-probs must match the rollout's, so dropout stays off. Gradient checkpointing needs train mode in HF,
        # so there we switch to train mode and zero every dropout instead.
        if self.cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.train()
            for mod in model.modules():
                if isinstance(mod, nn.Dropout):
                    mod.p = 0.0
            for name in ("attention_dropout", "hidden_dropout", "resid_pdrop", "attn_pdrop", "embd_pdrop"):
                if hasattr(model.config, name):
                    setattr(model.config, name, 0.0)
        else:
            model.eval()

    def _make_critic(self) -> ValueModel:
        from transformers import AutoModel

        from zerotir.models import check_model_dir

        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.cfg.model.dtype]
        backbone = AutoModel.from_pretrained(str(check_model_dir(self.cfg.model.path)), dtype=dtype)
        backbone.eval()
        return ValueModel(backbone, backbone.config.hidden_size)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def _autocast(self):
        if self.cfg.model.autocast_bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------------------------------------ forward
    def _inputs(self, mb: TrainBatch):
        ids = torch.cat([mb.prompt_ids, mb.response_ids], dim=1)
        attn = torch.cat([mb.prompt_mask, mb.response_mask], dim=1)
        return ids, attn, position_ids_from_mask(attn)

    def response_logits(self, model, mb: TrainBatch) -> torch.Tensor:
        """[b, R, V] logits predicting each response token (only the positions needed are projected to vocab)."""
        if self.share_prompt and _has_shared_prompts(mb):
            with self._autocast():
                return shared_prompt_logits(model, mb.prompt_ids, mb.prompt_mask, mb.response_ids, self._mask_dtype,
                                            self._keep_ok)
        ids, attn, pos = self._inputs(mb)
        r = mb.response_ids.shape[1]
        kw = {"logits_to_keep": r + 1} if self._keep_ok else {}
        with self._autocast():
            logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False, **kw).logits
        return logits[:, -(r + 1):-1]

    def _micro_batches(self, batch: TrainBatch) -> tuple[list[TrainBatch], list[list[int]]]:
        plens = batch.prompt_mask.sum(1).tolist()
        rlens = batch.response_mask.sum(1).tolist()
        keys = prompt_keys(batch.prompt_ids, batch.prompt_mask) if self.share_prompt else None
        groups = plan_micro_batches(plens, rlens, self.cfg.train.micro_batch_tokens, keys)
        return [trim_batch(batch.select(torch.tensor(g, dtype=torch.long))) for g in groups], groups

    @torch.no_grad()
    def _per_row(self, batch: TrainBatch, fn) -> torch.Tensor:
        """Run fn(micro_batch) -> [b, r] over micro-batches and scatter back into [B, R] (zeros past each row)."""
        batch = batch.to(self.device)
        out = torch.zeros(batch.response_ids.shape, dtype=torch.float32, device=self.device)
        mbs, groups = self._micro_batches(batch)
        for mb, g in zip(mbs, groups):
            vals = fn(mb)
            out[torch.tensor(g, device=self.device), : vals.shape[1]] = vals
        return out * batch.response_mask

    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """[B, R] current-policy log-probs of the response tokens (no grad)."""
        return self._per_row(batch, lambda mb: token_logprobs(self.response_logits(self.policy, mb),
                                                              mb.response_ids, self.temperature)).cpu()

    def ref_logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """[B, R] reference-policy log-probs (the initial weights; LoRA: adapter disabled)."""
        if not self.use_kl:
            raise RuntimeError("ref_logprobs: no reference model (algo.kl_coef is 0)")
        if self.lora:
            with self.policy.disable_adapter():
                return self.logprobs(batch)
        return self._per_row(batch, lambda mb: token_logprobs(self.response_logits(self.ref, mb), mb.response_ids,
                                                              self.temperature)).cpu()

    def _values(self, mb: TrainBatch) -> torch.Tensor:
        ids, attn, pos = self._inputs(mb)
        r = mb.response_ids.shape[1]
        with self._autocast():
            v = self.critic(ids, attn, pos, keep=r + 1)
        return v[:, :-1]

    def values(self, batch: TrainBatch) -> torch.Tensor:
        """[B, R] critic values V(s_t) of the state before each response token (GAE only)."""
        if self.critic is None:
            raise RuntimeError("values: no critic (algo.name is not 'gae')")
        return self._per_row(batch, self._values).cpu()

    # ------------------------------------------------------------------------------------------------- update
    def update(self, batch: TrainBatch, grad_sync: Callable[[list[torch.nn.Parameter]], None] | None = None
               ) -> dict[str, float]:
        """One optimizer step on `batch` (advantages filled in), accumulated over micro-batches.
        Returns loss/* and optim/* metrics.

        grad_sync: called with the policy's (then the critic's) trainable parameters after the last backward and
        before clipping — where data-parallel ranks all-reduce their gradients."""
        from zerotir.algos.losses import aggregate, entropy_from_logits, kl_estimate, policy_loss, value_loss

        a = self.cfg.algo
        if batch.advantages is None:
            raise ValueError("update: batch.advantages is None (run compute_advantages first)")
        batch = trim_batch(batch.to(self.device))
        norm_tokens = float(batch.loss_mask.sum().clamp(min=1))
        norm_rows = float(batch.size)
        mbs, _ = self._micro_batches(batch)
        self.policy.zero_grad(set_to_none=True)
        if self.critic is not None:
            self.critic.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        ratio_max = 0.0
        adv_vals = []
        for mb in mbs:
            mask = mb.loss_mask
            # token_mean normalises by all sampled tokens of the minibatch; sequence modes by its rows. With these
            # weights the accumulated gradient equals that of the loss aggregated over the whole minibatch.
            w = float(mask.sum()) / norm_tokens if a.loss_agg == "token_mean" else mb.size / norm_rows
            wt = float(mask.sum()) / norm_tokens
            # One fp32, temperature-scaled copy of the logits serves both the log-probs and the entropy.
            logits = self.response_logits(self.policy, mb).float()
            if self.temperature != 1.0:
                logits = logits / self.temperature
            logp = token_logprobs(logits, mb.response_ids)
            # behaviour_logprobs is set only for off-policy batches (see `off_policy`): then old = the learner's own
            # log-probs before this update phase and each token is weighted by min(old/behaviour, tis_cap).
            loss, st = policy_loss(logp, mb.old_logprobs, mb.advantages, mask, clip_low=a.clip_low,
                                   clip_high=a.clip_high, dual_clip=a.dual_clip, agg=a.loss_agg,
                                   behaviour_logprobs=mb.behaviour_logprobs, tis_cap=a.tis_cap)
            total = loss
            with torch.set_grad_enabled(a.entropy_coef > 0):
                ent = aggregate(entropy_from_logits(logits), mask, a.loss_agg)
            if a.entropy_coef > 0:
                total = total - a.entropy_coef * ent
            kl = torch.zeros(())
            if self.use_kl and mb.ref_logprobs is not None:
                kl = aggregate(kl_estimate(logp, mb.ref_logprobs, a.kl_estimator), mask, a.loss_agg)
                if not a.kl_in_reward:
                    total = total + a.kl_coef * kl
            vloss = torch.zeros(())
            if self.critic is not None:
                v = self._values(mb)
                vloss = value_loss(v, mb.values, mb.returns, mask, clip=a.value_clip, agg=a.loss_agg)
                total = total + a.value_coef * vloss
            (total * w).backward()
            for k, v_ in (("loss/policy", loss), ("loss/entropy", ent), ("loss/kl", kl), ("loss/value", vloss),
                          ("loss/total", total)):
                sums[k] = sums.get(k, 0.0) + float(v_.detach()) * w
            for k, name in (("clip_fraction", "loss/clip_fraction"), ("is_ratio_mean", "loss/is_ratio_mean"),
                            ("approx_kl", "loss/approx_kl_behaviour")):
                sums[name] = sums.get(name, 0.0) + float(st[k]) * wt
            ratio_max = max(ratio_max, float(st["is_ratio_max"]))
            adv_vals.append(mb.advantages[mask.bool()])
        params = [p for p in self.policy.parameters() if p.requires_grad]
        if grad_sync is not None:
            grad_sync(params)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0
                                                   else float("inf"))
        sums["optim/lr"] = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.critic is not None:
            if grad_sync is not None:
                grad_sync(list(self.critic.parameters()))
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.cfg.optim.grad_clip
                                           if self.cfg.optim.grad_clip > 0 else float("inf"))
            self.critic_optimizer.step()
            self.critic_scheduler.step()
            self.critic_optimizer.zero_grad(set_to_none=True)
        self.updates += 1
        adv = torch.cat(adv_vals) if adv_vals else torch.zeros(1)
        sums["loss/is_ratio_max"] = ratio_max
        sums["loss/advantage_mean"] = float(adv.mean())
        sums["loss/advantage_std"] = float(adv.std()) if adv.numel() > 1 else 0.0
        sums["optim/grad_norm"] = float(grad_norm)
        return sums

    # ------------------------------------------------------------------------------------------------ weights
    def policy_state_dict(self) -> dict[str, torch.Tensor]:
        """Plain HF-named weights of the current policy, for engine sync (LoRA: merged copies)."""
        # named_parameters, not state_dict: tied weights (embeddings = lm_head) appear once, under the owner's name.
        if not self.lora:
            return {k: v.detach() for k, v in self.policy.named_parameters()}
        self.policy.merge_adapter()
        try:
            base = self.policy.get_base_model()
            return {_strip_peft(k): v.detach().clone() for k, v in base.named_parameters() if "lora_" not in k}
        finally:
            self.policy.unmerge_adapter()

    def save_policy(self, out_dir) -> None:
        """Write the policy (merged, for LoRA) as an HF model directory with its tokenizer: `zerotir eval` loads it."""
        if self.lora:
            self.policy.merge_adapter()
            try:
                base = self.policy.get_base_model()
                sd = {_strip_peft(k): v for k, v in base.state_dict().items() if "lora_" not in k}
                base.save_pretrained(str(out_dir), state_dict=sd)
            finally:
                self.policy.unmerge_adapter()
        else:
            self.policy.save_pretrained(str(out_dir))
        self.tokenizer.save_pretrained(str(out_dir))

    def load_policy(self, model_dir) -> None:
        """Load weights saved by `save_policy` (full fine-tuning) into the policy in place."""
        from safetensors.torch import load_file
        from pathlib import Path

        files = sorted(Path(model_dir).glob("*.safetensors"))
        sd: dict[str, torch.Tensor] = {}
        for f in files:
            sd.update(load_file(str(f)))
        missing, unexpected = self.policy.load_state_dict(sd, strict=False)
        tied = set(getattr(self.policy, "_tied_weights_keys", None) or [])
        bad = [k for k in missing if k not in tied and not (k.endswith("lm_head.weight") and
                                                             getattr(self.policy.config, "tie_word_embeddings", False))]
        if bad or unexpected:
            raise RuntimeError(f"{model_dir}: checkpoint does not match the model (missing {bad[:3]}, "
                               f"unexpected {list(unexpected)[:3]})")

    def trainer_state(self) -> dict[str, Any]:
        """Optimizer/scheduler/critic (and LoRA adapter) state for checkpoints."""
        st: dict[str, Any] = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                              "updates": self.updates}
        if self.lora:
            st["adapter"] = {k: v for k, v in self.policy.state_dict().items() if "lora_" in k}
        if self.critic is not None:
            st["critic"] = self.critic.state_dict()
            st["critic_optimizer"] = self.critic_optimizer.state_dict()
            st["critic_scheduler"] = self.critic_scheduler.state_dict()
        return st

    def load_trainer_state(self, st: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.updates = int(st.get("updates", 0))
        if self.lora:
            self.policy.load_state_dict(st["adapter"], strict=False)
        if self.critic is not None:
            self.critic.load_state_dict(st["critic"])
            self.critic_optimizer.load_state_dict(st["critic_optimizer"])
            self.critic_scheduler.load_state_dict(st["critic_scheduler"])


def _has_shared_prompts(mb: TrainBatch) -> bool:
    return mb.size > 1 and len(set(prompt_keys(mb.prompt_ids, mb.prompt_mask))) < mb.size


def _strip_peft(key: str) -> str:
    return key.replace(".base_layer.", ".")


def _accepts_logits_to_keep(model) -> bool:
    import inspect

    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(target.forward).parameters
    except (TypeError, ValueError):
        return False
