"""The two kinds of Ray actors. Plain classes here (importable and testable without Ray); `driver.py` wraps them
with `ray.remote` and places them.

RolloutWorker: one generation engine (HF or vLLM) + one sandbox pool (or its share of a sandbox service: a comma-
separated `sandbox.url` pins worker i to replica i mod n) + one reward scorer. `rollout()` runs THE
rollout + reward phase of the single-process backend (`zerotir.train.phases.generate`) on a shard of the step's prompts;
trajectories record the engine's policy version. `update_weights()` is queued behind any in-flight rollout (an
actor runs its calls in order), which is what makes async rollouts measurably stale rather than torn.

LearnerWorker: one data-parallel rank holding a full `Learner`; `update()` runs the update phase on its share of
each minibatch with gradients synced across ranks (see `dp.py`). Rank 0 serves weights and writes checkpoints;
with FSDP-sharded learners (train.learner_sharding 'fsdp') `policy_state_dict`, `save_checkpoint`,
`load_checkpoint` and `param_checksum` are collectives that the driver calls on every rank.
"""

from __future__ import annotations

import dataclasses
import socket
from typing import Any, Iterable

from zerotir.config import Config
from zerotir.records import EvalResult, RolloutResult, UpdateResult
from zerotir.types import Problem, Trajectory


def sandbox_replica(url: str, index: int) -> str:
    """Rollout worker `index`'s sandbox service when `sandbox.url` lists replicas separated by commas: worker i uses
    replica i mod n. Pinning a worker to one replica keeps its stateful sessions on the server that holds them
    (a per-request balancer would not), and spreads workers evenly over the replicas."""
    urls = [u.strip() for u in url.split(",") if u.strip()]
    return urls[index % len(urls)] if urls else url


def _limit_threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))


class RolloutWorker:
    def __init__(self, cfg: Config, index: int, threads: int = 1):
        from zerotir.reward import RewardScorer
        from zerotir.rollout.engines import make_engine
        from zerotir.sandbox import make_sandbox
        from zerotir.train.phases import seed_everything

        _limit_threads(threads)
        seed_everything(cfg.train.seed)
        self.cfg, self.index = cfg, index
        self.engine = make_engine(cfg)
        sb_cfg = cfg.sandbox
        if sb_cfg.backend == "remote":
            sb_cfg = dataclasses.replace(sb_cfg, url=sandbox_replica(sb_cfg.url, index))
        self.sandbox = make_sandbox(sb_cfg).__enter__()
        self.scorer = RewardScorer(cfg.reward).__enter__()

    def ready(self) -> int:
        return self.index

    def update_weights(self, state_dict: dict[str, Any], version: int) -> int:
        self.engine.update_weights(state_dict, version)
        return self.engine.policy_version

    def param_checksum(self) -> float:
        """Sum of the engine's model parameters in float64 (tests check the weight sync; the HF engine only)."""
        model = getattr(self.engine, "model", None)
        if model is None:
            raise NotImplementedError(f"param_checksum: {type(self.engine).__name__} exposes no torch model")
        return tensor_sum(model.parameters())

    def rollout(self, step: int, problems: list[Problem], group_offset: int, seed: int) -> RolloutResult:
        """Rollout + reward of `problems` (group ids start at `group_offset`) with the engine's current weights."""
        from zerotir.train.phases import generate

        return generate(problems, self.engine, self.sandbox, self.scorer, self.cfg,
                        version=self.engine.policy_version, group_offset=group_offset, seed=seed, step=step)

    def evaluate(self, eval_set: list[Problem], step: int) -> EvalResult:
        from zerotir.train.phases import heldout_eval

        return heldout_eval(eval_set, self.engine, self.sandbox, self.scorer, self.cfg, step)

    def close(self) -> None:
        for res in (self.scorer, self.sandbox):
            try:
                res.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - best-effort shutdown
                pass


def tensor_sum(tensors: Iterable[Any]) -> float:
    """Sum of all elements in float64. FSDP-sharded tensors (DTensors) count their local shard here and the shards
    are summed over the ranks (a collective: every rank must call it); plain tensors count once, whole."""
    import torch

    plain, local, any_sharded = 0.0, torch.zeros((), dtype=torch.float64), False
    for t in tensors:
        if hasattr(t, "to_local"):
            local += t.detach().to_local().double().sum().cpu()
            any_sharded = True
        else:
            plain += float(t.detach().double().sum())
    if any_sharded:
        import torch.distributed as dist

        if dist.get_backend() == "nccl":   # NCCL reduces device tensors only
            local = local.cuda()
        dist.all_reduce(local)
    return plain + float(local)


def free_address() -> tuple[str, int]:
    """This node's IP and a free TCP port (rank 0's rendezvous address for torch.distributed)."""
    try:
        import ray

        ip = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - outside Ray
        ip = "127.0.0.1"
    with socket.socket() as s:
        s.bind(("", 0))
        return ip, s.getsockname()[1]


class LearnerWorker:
    def __init__(self, cfg: Config, rank: int, world: int, threads: int = 1):
        _limit_threads(threads)
        self.cfg, self.rank, self.world = cfg, rank, world
        self.learner = None

    def address(self) -> tuple[str, int]:
        return free_address()

    def setup(self, master_addr: str, master_port: int) -> int:
        """Join the process group, build the Learner exactly as the single-process loop does (same seed first),
        then make every rank start from rank 0's weights."""
        import torch
        import torch.distributed as dist

        from zerotir.distributed.dp import RankShare, broadcast_params
        from zerotir.train.learner import Learner
        from zerotir.train.phases import seed_everything

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU
            torch.cuda.set_device(0)
        dist.init_process_group(backend, init_method=f"tcp://{master_addr}:{master_port}", rank=self.rank,
                                world_size=self.world)
        seed_everything(self.cfg.train.seed)
        self.learner = Learner(self.cfg, data_parallel=RankShare(self.rank, self.world, self.cfg.algo.loss_agg))
        broadcast_params(self.learner.policy)
        if self.learner.critic is not None:
            broadcast_params(self.learner.critic)
        return self.rank

    def update(self, kept: list[Trajectory], step: int) -> UpdateResult:
        """THE update phase (`zerotir.train.update.update_phase`); the learner was built with this rank's
        `RankShare`, so each optimizer step trains on this rank's share with gradients all-reduced."""
        from zerotir.train.backend import update_result
        from zerotir.train.compute import shape_of
        from zerotir.train.update import update_phase

        learner = self.learner
        stats = update_phase(learner, kept, self.cfg, step)
        return update_result(stats, kept, self.cfg, shape_of(learner.policy), use_kl=learner.use_kl,
                             critic=learner.critic is not None)

    def policy_state_dict(self) -> dict[str, Any]:
        """CPU copies of the policy weights (HF names) for the rollout engines."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.learner.policy_state_dict().items()}

    def save_checkpoint(self, run_dir: str, step: int, state: dict[str, Any], keep: int) -> str:
        from zerotir.train.checkpoint import save_checkpoint

        return str(save_checkpoint(run_dir, step, self.learner, state, keep=keep))

    def load_checkpoint(self, path: str) -> dict[str, Any]:
        """Weights, optimizer/scheduler and RNG state from a checkpoint (either backend's); returns state.json."""
        from zerotir.train.checkpoint import load_checkpoint

        return load_checkpoint(path, self.learner)

    def param_checksum(self) -> float:
        """Sum of all policy parameters in float64 (tests check ranks stay identical and the weight sync). Sharded:
        a collective (local shards summed over the ranks), so every rank must be called; all return the total."""
        return tensor_sum(self.learner.policy.parameters())

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
