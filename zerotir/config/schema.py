"""The configuration schema: one dataclass per section, a docstring per field (the documentation). Loading,
overrides and saving live in `zerotir.config.io`."""


from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

BUILTIN_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# What the sandbox's warm workers import before they fork a context for each call (`SandboxConfig.preimport`).
# Contexts fork from the warm worker, so an imported module costs nothing per call, but every module held makes
# each fork dearer: ~8 ms with this stack against ~1 ms bare on the 2-core development machine.
SANDBOX_PREIMPORT = ("numpy", "sympy", "scipy", "mpmath", "sympy.ntheory", "numpy.linalg")


class ConfigError(ValueError):
    """A configuration problem, described in one line that names the offending key or file."""


@dataclass
class ModelConfig:
    path: str = "toy"
    """HF model directory (config + weights + tokenizer), or 'toy' for the toy base model shipped with the project."""
    dtype: str = "float32"
    """Parameter dtype for the policy: float32, bfloat16 or float16 (float64 for equivalence tests)."""
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
    eval_extra: list[str] = field(default_factory=list)
    """More held-out sets evaluated with `eval` at every periodic eval (same forms, `eval_limit` each), e.g.
    ['toy:ood-wording', 'toy:ood-size']: each is logged as eval/<name>/<metric>, name = the part after the last ':'
    (a file's stem for a path), so a run's curves show whether what it learns carries beyond its own distribution."""
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
    deterministic: bool = False
    """Bit-reproducible rollouts (HF engine): a trajectory back from a tool rejoins the batch a fixed number of engine
    steps after it left (`zerotir.rollout.engine.REJOIN_LAG_STEPS`), not when the sandbox happens to answer, and a CPU engine
    keeps torch's thread count instead of measuring the fastest. Otherwise the batch a row is decoded in, and so its
    log-probs at float rounding, depend on timing: runs of one seed drift apart (and a resumed run from the one it
    resumes), flipping single samples after tens of steps. Costs a stall whenever a tool call outlasts the lag."""
    branch_factor: int = 1
    """Tree rollouts: continuations a trajectory forks into after a tool output (K; 1 = no branching). The children
    share the prefix tokens (the engine's cache rows copied, not recomputed) and the interpreter state (Session.fork);
    each leaf is a trajectory of the prompt's group (see zerotir/rollout/tree.py)."""
    branch_at: str = "every_tool_output"
    """Where to branch: 'every_tool_output' (after each executed call's output) or 'entropy' (only where the entropy of
    the next-token sampling distribution after the output is >= branch_entropy_threshold)."""
    branch_entropy_threshold: float = 1.0
    """Entropy in nats above which branch_at='entropy' branches."""
    branch_max_points: int = 1
    """Branch points along one path from the root (tree depth)."""
    branch_max_leaves: int = 4
    """Leaves one root chain (one of the n_samples) may end in: a node with a budget of L leaves forks into
    min(branch_factor, L) children that split L evenly, so a prompt yields at most n_samples·branch_max_leaves
    trajectories."""


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
    """Memory of one execution, its forked children included (a per-call cgroup; per-process RLIMIT_AS without
    quotas)."""
    max_output_bytes: int = 16384
    """Captured stdout/stderr cap per execution."""
    isolation: str = "full"
    """'full' (namespaces + unprivileged uid + seccomp; refuses to start if a layer is missing), 'rlimits', or 'none'."""
    max_concurrency: int = 0
    """Executions running at once in the local pool (0 = `workers`); more callers queue (queueing is not timed)."""
    cpu_cores: float = 1.0
    """CPU cores one execution's processes may use together (per-call cgroup CPU quota)."""
    quotas: bool = True
    """Per-call cgroup quotas (memory, pids, CPU) on the whole process tree; required by isolation 'full'.
    False falls back to per-process limits and logs a warning."""
    remote_concurrency: int = 64
    """Most requests in flight from one client to the remote service."""
    remote_retries: int = 2
    """Retries of a stateless remote call that came back 'sandbox_error' (session calls are never retried)."""
    preimport: list[str] = field(default_factory=lambda: list(SANDBOX_PREIMPORT))
    """Modules the local pool's warm workers import (sympy also warmed once) so that calls find them loaded; the
    standard library's math modules always are. Fewer modules make each call's fork cheaper: the toy preset uses
    [] (its code needs only builtins and `math`): a one-call session costs ~40% less there (`zerotir sandbox bench
    --rollout`). A module
    missing here is still importable by the code, at its import time per call. Local backend only (the remote
    service has `zerotir sandbox serve --preimport`)."""


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
    """Advantage estimator: gae, grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline, tree (tree rollouts,
    rollout.branch_factor > 1: each leaf against its siblings and against the prompt's leaves)."""
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
    """Cap on the behaviour correction weight proximal/behaviour of off-policy batches (0 = off: PPO's ratio is
    then taken against the rollout's own log-probs). How it is applied is `off_policy`."""
    off_policy: str = "truncated_is"
    """Objective for off-policy batches (async staleness > 0, a non-HF engine, several minibatches/epochs; needs
    tis_cap > 0). Both clip PPO's ratio against the learner's proximal log-probs (its weights before the update
    phase) and weight each token by w = proximal/behaviour: 'truncated_is' uses min(w, tis_cap); 'decoupled'
    (AReaL's decoupled PPO) uses w and drops tokens with w > tis_cap (weight 0, still counted in the mean)."""
    dynamic_sampling: bool = False
    """Drop groups whose samples are all right or all wrong and refill from the next prompts."""
    drop_sandbox_errors: bool = True
    """Drop trajectories whose tool calls hit a sandbox infrastructure failure."""
    overlong_filter: bool = False
    """Mask out truncated (finish reason 'length') responses from the loss."""
    filters: list[str] = field(default_factory=list)
    """Tool-outcome filters, applied in this order after the sandbox-error drop and before the overlong filter and
    dynamic sampling (`algos.filters.TOOL_FILTERS`): 'roc' (GRPO-RoC: oversample, keep the correct trajectories
    with the fewest tool errors and format issues, down-sample failures in proportion) and 'void_turns' (drop
    trajectories whose last turn produced neither a code block nor a final answer). Advantages see the kept set
    only."""
    roc_oversample: int = 2
    """With the 'roc' filter: the rollout samples roc_oversample x rollout.n_samples responses per prompt and the
    filter keeps rollout.n_samples of them."""


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
    max_sandbox_error_share: float = 0.25
    """A step where more than this share of trajectories hit a sandbox infrastructure failure logs a warning naming
    the sandbox and the count (those trajectories are dropped, so the step trains on scraps)."""
    max_bad_steps: int = 3
    """After this many consecutive steps over `max_sandbox_error_share` (or with dynamic sampling short of groups
    after its refills) the run saves a checkpoint and stops with a clear error instead of training on scraps (0 = never
    stop)."""
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
    learner_sharding: str = "none"
    """How the data-parallel learner ranks hold the models: 'none' (each a full copy of the weights, gradients and
    AdamW state; gradients all-reduced) or 'fsdp' (FSDP2 `fully_shard` per decoder layer, then the root, for the
    policy, critic and reference: each rank holds 1/learners of them; on GPU float32 master weights, bfloat16
    compute, float32 gradient reduction). 'fsdp' needs backend 'ray' (the ranks) and no LoRA."""
    fsdp_cpu_offload: bool = False
    """With learner_sharding 'fsdp' on GPU: keep the sharded weights, gradients and AdamW state in CPU memory
    (FSDP2 CPUOffloadPolicy; the optimizer steps on the CPU). No effect on CPU."""
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
    """Also log to Weights & Biases (in the mode `wandb_mode` picks)."""
    wandb_mode: str = "auto"
    """W&B mode: 'auto' (the user's WANDB_MODE if set, else online when logged in, i.e. WANDB_API_KEY or a ~/.netrc
    entry for api.wandb.ai, else offline), 'online', 'offline' or 'disabled'."""
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
