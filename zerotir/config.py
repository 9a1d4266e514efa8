"""Typed run configuration: one dataclass per section, a docstring per field, YAML files + dotted overrides.

    cfg = load_config("configs/toy.yaml", overrides=["algo.name=grpo", "rollout.max_tool_calls=4"])
    save_config(cfg, run_dir / "config.yaml")      # every run directory holds its resolved config

Errors (unknown key, wrong type, missing file, bad YAML) raise `ConfigError` with one line naming the key or file.
The field docstrings are the documentation: `zerotir config --show` prints them (see `describe_config`).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


BUILTIN_CONFIGS = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A configuration problem, described in one line that names the offending key or file."""


@dataclass
class ModelConfig:
    path: str = "toy"
    """HF model directory (config + weights + tokenizer), or 'toy' for the toy base model shipped with the project."""
    dtype: str = "float32"
    """Parameter dtype for the policy: float32, bfloat16 or float16."""
    autocast_bf16: bool = False
    """Run forward/backward under bf16 autocast (helps on GPUs with bf16; usually slower on CPU)."""
    gradient_checkpointing: bool = False
    """Trade compute for memory in the learner's forward pass."""
    lora_rank: int = 0
    """LoRA rank through PEFT; 0 trains all parameters."""
    lora_alpha: int = 16
    """LoRA scaling numerator (effective scale alpha/rank)."""
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names LoRA adapters attach to."""
    device: str = "auto"
    """'auto' (cuda if available else cpu), 'cpu' or 'cuda[:N]'."""


@dataclass
class DataConfig:
    train: str = "toy:train"
    """Training problems: a JSONL path ({id, problem, answer}), 'toy:<split>' for the toy tasks, or 'hf:<dataset id>'."""
    eval: str = "toy:heldout"
    """Held-out problems for periodic eval during training (same forms as `train`)."""
    eval_limit: int = 128
    """Use at most this many held-out problems per periodic eval (0 = all)."""
    problem_field: str = "problem"
    """Field holding the problem text in JSONL / hub rows."""
    answer_field: str = "answer"
    """Field holding the gold answer in JSONL / hub rows."""
    shuffle: bool = True
    """Shuffle training problems each epoch (seeded by train.seed)."""


@dataclass
class RolloutConfig:
    template: str = "zerotir"
    """Prompt template: 'zerotir' (the paper's plain-text template ending in 'Assistant: <think>'), 'toy', or 'chat'."""
    n_samples: int = 8
    """Samples per prompt (group size for GRPO / REINFORCE++-baseline / RLOO)."""
    temperature: float = 1.0
    """Sampling temperature (0 = greedy)."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    top_k: int = 0
    """Top-k sampling (0 = off)."""
    max_new_tokens_per_turn: int = 512
    """New tokens the model may sample between two tool calls."""
    max_total_tokens: int = 1024
    """Budget of the whole response (sampled + inserted tool tokens); reaching it ends with finish reason 'length'."""
    max_tool_calls: int = 2
    """Tool calls executed per trajectory during training; further code blocks are not run."""
    max_tool_output_tokens: int = 256
    """Tool output is truncated to this many tokens, with a visible marker."""
    tool_budget_message: str = "Tool call budget exhausted; the code was not run."
    """Text shown to the model in the output block when a code block exceeds the tool budget ('' to stop instead)."""
    stateful_tools: bool = True
    """Variables persist across a trajectory's code blocks (a sandbox session); False runs each block fresh."""
    stop_strings: list[str] = field(default_factory=list)
    """Extra strings that end the response (besides EOS)."""
    batch_size: int = 64
    """Maximum sequences decoded together by the engine (continuous batching slot count)."""
    engine: str = "hf"
    """Generation engine: 'hf' (own KV-cache loop, CPU/GPU) or 'vllm' (GPU)."""


@dataclass
class SandboxConfig:
    backend: str = "local"
    """'local' (in-process worker pool) or 'remote' (HTTP service at `url`)."""
    url: str = ""
    """Sandbox service URL for backend 'remote', e.g. http://127.0.0.1:8080."""
    token: str = ""
    """Bearer token for the remote service ('' = none)."""
    workers: int = 2
    """Warm worker processes in the local pool."""
    timeout_s: float = 5.0
    """Wall-clock limit per code execution."""
    memory_mb: int = 512
    """Address-space limit per execution."""
    max_output_bytes: int = 16384
    """Captured stdout/stderr cap per execution."""
    isolation: str = "full"
    """'full' (namespaces + unprivileged uid + seccomp; refuses to start if a layer is missing), 'rlimits', or 'none'."""
    max_concurrency: int = 0
    """Executions running at once in the local pool (0 = `workers`); more callers queue (queueing is not timed)."""
    remote_concurrency: int = 64
    """Most requests in flight from one client to the remote service."""
    remote_retries: int = 2
    """Retries of a stateless remote call that came back 'sandbox_error' (session calls are never retried)."""


@dataclass
class RewardConfig:
    answer_format: str = "boxed"
    """Where the final answer is read: 'boxed' (last \\boxed{}) or 'answer_tag' (<answer>…</answer>, then boxed)."""
    verify_timeout_s: float = 1.0
    """Per-item time limit for math-verify; a hostile answer past it scores wrong."""
    verify_workers: int = 2
    """Processes in the verifier pool."""
    verify_memory_mb: int = 2048
    """Address-space limit per verifier process; an expression that needs more scores wrong."""
    verify_max_answer_chars: int = 1000
    """Answers (or gold answers) longer than this score wrong without being parsed."""
    format_reward: float = 0.0
    """Added when a final answer is present in the expected format (off by default, as in the paper)."""
    tool_error_penalty: float = 0.0
    """Subtracted per tool call that ended in error/timeout (off by default)."""
    overlong_penalty: float = 0.0
    """Maximum soft penalty for responses near the length budget (off by default)."""
    overlong_buffer_tokens: int = 0
    """Length of the soft-penalty ramp before max_total_tokens (0 = no ramp)."""


@dataclass
class AlgoConfig:
    name: str = "reinforce_pp_baseline"
    """Advantage estimator: gae, grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline."""
    gamma: float = 1.0
    """Discount over response tokens."""
    lam: float = 1.0
    """GAE lambda."""
    clip_low: float = 0.2
    """PPO ratio clip below 1 (1 - clip_low)."""
    clip_high: float = 0.28
    """PPO ratio clip above 1 (1 + clip_high): 'clip-higher'."""
    dual_clip: float = 0.0
    """Dual-clip bound c > 1 for negative advantages (0 = off)."""
    loss_agg: str = "token_mean"
    """Loss aggregation: token_mean, seq_mean_token_mean, seq_mean_token_sum (Dr.GRPO)."""
    kl_coef: float = 0.0
    """KL coefficient to the reference policy (0 = no reference model is loaded)."""
    kl_estimator: str = "k3"
    """KL estimator: k1, k2 or k3."""
    kl_in_reward: bool = False
    """Fold KL into the token reward (REINFORCE++ style) instead of adding it to the loss."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient."""
    value_clip: float = 0.2
    """Critic value-loss clip range (GAE/PPO only)."""
    value_coef: float = 0.5
    """Weight of the critic loss."""
    tis_cap: float = 2.0
    """Truncated importance sampling cap for behaviour/learner mismatch (0 = off)."""
    dynamic_sampling: bool = False
    """Drop groups whose samples are all right or all wrong and refill from the next prompts."""
    drop_sandbox_errors: bool = True
    """Drop trajectories whose tool calls hit a sandbox infrastructure failure."""
    overlong_filter: bool = False
    """Mask out truncated (finish reason 'length') responses from the loss."""


@dataclass
class OptimConfig:
    lr: float = 1e-4
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """AdamW betas."""
    warmup_steps: int = 0
    """Linear LR warm-up steps."""
    schedule: str = "constant"
    """LR schedule after warm-up: constant, cosine or linear."""
    grad_clip: float = 1.0
    """Max global gradient norm (0 = off)."""
    critic_lr: float = 1e-4
    """Critic learning rate (GAE/PPO only)."""


@dataclass
class TrainConfig:
    steps: int = 30
    """RL steps (one rollout batch each)."""
    prompts_per_step: int = 16
    """Prompts sampled per step (each gets rollout.n_samples responses)."""
    ppo_epochs: int = 1
    """Passes over each rollout batch."""
    minibatches: int = 1
    """Optimizer steps per epoch (the batch is split into this many minibatches)."""
    micro_batch_tokens: int = 8192
    """Tokens per forward/backward micro-batch (gradient accumulation over micro-batches)."""
    share_prompt_forward: bool = True
    """Run each distinct prompt once per micro-batch and let its responses attend to its keys/values (same log-probs
    and gradients as one row per response, up to float rounding; fewer tokens). Not used with gradient checkpointing
    or a flash-attention model."""
    seed: int = 0
    """Seed for data order, sampling and initialisation."""
    run_dir: str = "runs/{name}-{time}"
    """Run directory; {name} and {time} are filled in."""
    name: str = "zerotir"
    """Run name."""
    eval_every: int = 10
    """Held-out eval every N steps (0 = only at the end)."""
    eval_at_start: bool = True
    """Evaluate the base model before the first update and log it as the step-0 row (compute 0): the starting
    point of every curve the analysis fits."""
    save_every: int = 10
    """Checkpoint every N steps (0 = only at the end)."""
    keep_checkpoints: int = 2
    """How many recent checkpoints to keep."""
    transcripts_every: int = 5
    """Write sample transcripts every N steps."""
    backend: str = "local"
    """'local' (one process) or 'ray'."""
    rollout_workers: int = 1
    """Ray rollout actors (backend 'ray')."""
    learners: int = 1
    """Ray data-parallel learners (backend 'ray')."""
    ray_address: str = ""
    """Ray cluster address ('' starts a local Ray)."""
    async_rollout: bool = False
    """Generate step k+1 while step k trains (off-policy by at most max_staleness)."""
    max_staleness: int = 1
    """How many policy versions old a trajectory may be in async mode."""


@dataclass
class EvalConfig:
    benchmarks: list[str] = field(default_factory=lambda: ["math500"])
    """Benchmark names (see `zerotir eval --list`)."""
    data_dir: str = ""
    """Directory of benchmark JSONL files ('' = ../shared/data/benchmarks or $ZEROTIR_DATA)."""
    samples: int = 4
    """Samples per problem (k for avg@k, pass@k, maj@k)."""
    temperature: float = 1.0
    """Sampling temperature at eval (0 = greedy)."""
    top_p: float = 1.0
    """Nucleus sampling mass at eval."""
    max_tool_calls: int = 2
    """Tool calls executed per response at eval (the paper's 'Eval Env. Iter.')."""
    limit: int = 0
    """Evaluate at most this many problems per benchmark (0 = all)."""


@dataclass
class LoggingConfig:
    level: str = "INFO"
    """stdlib logging level."""
    live: bool = True
    """Show a rich live table during training."""
    tensorboard: bool = False
    """Also write TensorBoard event files to the run dir."""
    wandb: bool = False
    """Also log to Weights & Biases (offline mode)."""
    wandb_project: str = "zerotir"
    """W&B project name."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


# ---------------------------------------------------------------------------------------------- conversion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one value to the declared type; raise ConfigError naming `key` otherwise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    raise ConfigError(f"config key '{key}': unsupported type {_type_name(tp)}")


def _merge_into(obj: Any, data: dict, prefix: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}': expected a mapping, got {data!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in names:
            near = [n for n in names if n.startswith(str(k)[:3])]
            hint = f" (did you mean {', '.join(sorted(near))}?)" if near else ""
            raise ConfigError(f"unknown config key '{key}'{hint}")
        current = getattr(obj, k)
        if dataclasses.is_dataclass(current):
            _merge_into(current, v, key + ".")
        else:
            setattr(obj, k, _coerce(v, hints[k], key))


def config_from_dict(data: dict | None) -> Config:
    """Build a Config from a (possibly partial) nested mapping; unknown keys and wrong types are errors."""
    cfg = Config()
    _merge_into(cfg, data or {}, "")
    return cfg


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected key=value, e.g. algo.name=grpo")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply dotted `key=value` overrides (values parsed as YAML scalars/lists) in place and return cfg."""
    for item in overrides:
        path, value = _parse_override(item)
        nested: Any = value
        for part in reversed(path):
            nested = {part: nested}
        # A string given where a number/list is expected stays a string and fails type checking with the key named.
        _merge_into(cfg, nested, "")
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when path is None), then apply dotted overrides."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            # A bare name ("toy", "paper") selects a preset shipped in zerotir/configs/.
            builtin = BUILTIN_CONFIGS / f"{p.stem}.yaml"
            if len(p.parts) == 1 and p.suffix in ("", ".yaml") and builtin.is_file():
                p = builtin
            else:
                raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"config file {path}:{where} is not valid YAML ({getattr(e, 'problem', e)})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping of sections")
    cfg = config_from_dict(data)
    return apply_overrides(cfg, overrides or [])


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a config dataclass (the string literal under each field)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for prev, node in zip(body, body[1:]):
        if isinstance(prev, ast.AnnAssign) and isinstance(prev.target, ast.Name):
            if isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant):
                docs[prev.target.id] = str(node.value.value)
    return docs


def describe_config(cfg: Config | None = None) -> str:
    """Every key with its value and docstring, one per line: the reference users read."""
    cfg = cfg or Config()
    lines = []
    for sec in dataclasses.fields(cfg):
        section = getattr(cfg, sec.name)
        docs = field_docs(type(section))
        lines.append(f"[{sec.name}]")
        for f in dataclasses.fields(section):
            lines.append(f"  {sec.name}.{f.name} = {getattr(section, f.name)!r}  # {docs.get(f.name, '')}")
    return "\n".join(lines)
