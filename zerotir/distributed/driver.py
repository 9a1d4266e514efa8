"""`RayBackend`: THE training loop's phases (`zerotir.train.loop.train(cfg, backend_factory=RayBackend)`) on a Ray
topology.

    rollout workers (actors: engine + sandbox pool + scorer) ──trajectories──▶ driver ──kept──▶ learner group
          ▲                                                                                    (torch.distributed
          └──────────────── versioned weights (rank 0's state dict, one object-store copy) ◀────  gloo / NCCL)

Per step the loop launches the step's prompts, which this backend splits into contiguous shards (group ids as in one
process) rolled out on the workers (sync: on the current weights; async: up to train.max_staleness steps ahead,
through the loop's `RolloutPipeline`); the shards' results are joined (`RolloutResult.concat`, counts add, metrics
computed afterwards from the joined trajectories); the learner ranks run the update phase data-parallel; rank 0's
weights go to every worker with the new version; eval on worker 0; checkpoints from rank 0 (the same format
`zerotir train --resume` reads). With FSDP-sharded learners (train.learner_sharding 'fsdp') the weight gather and
the checkpoint save/load are collectives: every rank is called (rank 0 still returns the one full state dict and
owns the checkpoint directory); a call to rank 0 alone would wait forever for the others.

Local mode (train.ray_address '') starts Ray with this machine's CPUs (and GPUs, if any). With GPUs, every actor
gets one GPU from a placement group: learner bundles first (packed, so NCCL ranks share nodes), then rollout
bundles; sandboxes run inside the rollout actors, on their CPUs, never on a learner's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from zerotir.config import Config
from zerotir.records import EvalResult, RolloutResult, UpdateResult
from zerotir.telemetry import Progress, get_logger
from zerotir.train.pipeline import shard
from zerotir.types import Problem, Trajectory

log = get_logger("distributed")


@dataclass
class RayHandle:
    """The refs of one rollout call's per-worker shards; `result()` joins them in worker order (they ran in
    parallel: the call took as long as its slowest shard). While waiting it counts finished shards' trajectories
    into `progress` (`sizes`: trajectories per shard)."""

    refs: list[Any]
    progress: Progress | None = None
    sizes: tuple[int, ...] = ()

    def result(self) -> RolloutResult:
        import ray

        if self.progress is not None:
            pending, size = list(self.refs), dict(zip(self.refs, self.sizes))
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                self.progress.advance("rollout", size.get(done[0], 0))
            self.progress.end("rollout")
        return RolloutResult.concat(ray.get(self.refs), parallel=True)


def init_ray(cfg: Config) -> bool:
    """Connect to train.ray_address, or start a local Ray sized to this machine. Returns True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    env = {"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}}
    if cfg.train.ray_address:
        ray.init(address=cfg.train.ray_address, runtime_env=env, log_to_driver=True)
        return True
    import torch

    ray.init(num_cpus=len(os.sched_getaffinity(0)) or 2, num_gpus=torch.cuda.device_count(), include_dashboard=False,
             object_store_memory=256 * 1024 * 1024, runtime_env=env, log_to_driver=True)
    return True


def sync_weight_refs(learners: Sequence[Any], workers: Sequence[Any], version: int,
                     sharded: bool) -> tuple[list[Any], list[Any]]:
    """Queue one weight sync: (the workers' `update_weights` refs, the learners' gather refs). Sharded learners
    gather collectively, so every rank is asked (rank 0 returns the full dict, the others {}); unsharded, rank 0
    alone. The workers all get rank 0's ref: one gather per version, one object-store copy."""
    gathers = [lw.policy_state_dict.remote() for lw in (learners if sharded else learners[:1])]
    return [w.update_weights.remote(gathers[0], version) for w in workers], gathers


def learner_ranks_for_save(learners: Sequence[Any], sharded: bool) -> list[Any]:
    """The ranks that write a checkpoint: all of them when sharded (each writes its shards; rank 0 the rest), rank 0
    alone otherwise (ranks are identical)."""
    return list(learners) if sharded else list(learners[:1])


class Topology:
    """Learner ranks and rollout workers placed on the cluster."""

    def __init__(self, cfg: Config):
        import ray

        from zerotir.distributed.actors import LearnerWorker, RolloutWorker
        from zerotir.train.sharding import enabled

        t = cfg.train
        self.sharded = enabled(cfg)
        n_learn, n_roll = max(1, t.learners), max(1, t.rollout_workers)
        res = ray.cluster_resources()
        gpus = int(res.get("GPU", 0))
        self.pg = None
        if gpus:
            from ray.util.placement_group import placement_group
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            if gpus < n_learn + n_roll:
                raise ValueError(f"{n_learn} learners + {n_roll} rollout workers need {n_learn + n_roll} GPUs; "
                                 f"the cluster has {gpus}")
            cpu = max(1.0, float(res.get("CPU", 1)) / gpus)
            self.pg = placement_group([{"GPU": 1, "CPU": cpu}] * (n_learn + n_roll), strategy="PACK")
            ray.get(self.pg.ready())
            opts = [dict(num_gpus=1, num_cpus=cpu, scheduling_strategy=PlacementGroupSchedulingStrategy(
                self.pg, placement_group_bundle_index=i)) for i in range(n_learn + n_roll)]
            threads = int(cpu)
        else:  # CPU only: share the cores; torch in each actor uses one thread
            cpu = float(res.get("CPU", 2)) / (n_learn + n_roll)
            opts = [dict(num_cpus=cpu)] * (n_learn + n_roll)
            threads = 1
        Learn = ray.remote(LearnerWorker)
        Roll = ray.remote(RolloutWorker)
        self.learners = [Learn.options(**opts[r]).remote(cfg, r, n_learn, threads) for r in range(n_learn)]
        addr, port = ray.get(self.learners[0].address.remote())
        setups = [lw.setup.remote(addr, port) for lw in self.learners]
        self.workers = [Roll.options(**opts[n_learn + i]).remote(cfg, i, threads) for i in range(n_roll)]
        ray.get(setups + [w.ready.remote() for w in self.workers])

    def sync_weights(self, version: int) -> list[Any]:
        """Rank 0's weights → every worker (one object-store copy); calls queue behind in-flight rollouts. Returns
        the refs to wait on: the workers' updates and every gather (a failed rank shows up here, not as a hang)."""
        updates, gathers = sync_weight_refs(self.learners, self.workers, version, self.sharded)
        return updates + gathers[1:]

    def close(self) -> None:
        import ray

        for a in self.workers + self.learners:
            try:
                ray.get(a.close.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - best-effort shutdown
                pass
            ray.kill(a)
        if self.pg is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.pg)


class RayBackend:
    """The `zerotir.train.backend.Backend` protocol on a Ray topology: rollouts sharded over the rollout workers
    (contiguous shards, so group ids are those of one process), data-parallel updates on every learner rank, rank 0's
    weights to every worker, eval on worker 0, checkpoints written by rank 0 (sharded: by every rank, each its shards)
    and read by every rank."""

    def __init__(self, cfg: Config):
        from zerotir.models import resolve_model_path
        from zerotir.train.backend import check_sandbox_before_start
        from zerotir.train.compute import shape_from_dir

        self.cfg, self.progress, self.started = cfg, Progress(), False
        check_sandbox_before_start(cfg)              # before Ray starts: an unreachable sandbox.url fails here
        self.started = init_ray(cfg)
        self.topo: Topology | None = None
        try:
            self.topo = Topology(cfg)
        except BaseException:
            self.close()
            raise
        self.shape = shape_from_dir(str(resolve_model_path(cfg.model.path)))
        log.info("ray: %d rollout workers, %d learners, %s mode", len(self.topo.workers), len(self.topo.learners),
                 "async" if cfg.train.async_rollout else "sync")

    def launch(self, step: int, problems: Sequence[Problem], group_offset: int, seed: int) -> RayHandle:
        from zerotir.algos.filters import samples_per_prompt

        workers, n = self.topo.workers, samples_per_prompt(self.cfg)
        parts = shard(list(problems), len(workers))
        refs = [workers[i % len(workers)].rollout.remote(step, part, group_offset + off, seed)
                for i, (off, part) in enumerate(parts)]
        self.progress.begin("rollout", len(problems) * n)   # async: the newest launch is the one shown
        return RayHandle(refs, self.progress, tuple(len(part) * n for _, part in parts))

    def update(self, kept: Sequence[Trajectory], step: int) -> UpdateResult:
        import ray

        kept_ref = ray.put(list(kept))
        return ray.get([lw.update.remote(kept_ref, step) for lw in self.topo.learners])[0]

    def sync_weights(self, version: int, wait: bool = True) -> None:
        import ray

        refs = self.topo.sync_weights(version)   # queued behind in-flight async rollouts
        if wait:
            ray.get(refs)

    def evaluate(self, problems: Sequence[Problem], step: int) -> EvalResult:
        import ray

        return ray.get(self.topo.workers[0].evaluate.remote(list(problems), step))

    def save(self, run_dir: Path, step: int, state: dict[str, Any], keep: int) -> None:
        import ray

        ranks = learner_ranks_for_save(self.topo.learners, self.topo.sharded)
        ray.get([lw.save_checkpoint.remote(str(run_dir), step, state, keep) for lw in ranks])

    def load(self, checkpoint: Path) -> dict[str, Any]:
        """Every rank loads weights + optimizer state (sharded: its own shards, a collective); returns state.json
        (data cursor, compute totals)."""
        import ray

        return ray.get([lw.load_checkpoint.remote(str(checkpoint)) for lw in self.topo.learners])[0]

    def close(self) -> None:
        import ray

        if self.topo is not None:
            self.topo.close()
            self.topo = None
        if self.started:
            ray.shutdown()
            self.started = False
