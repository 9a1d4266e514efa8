"""`ray_train(cfg)`: the single-process loop's phases on a Ray topology.

    rollout workers (actors: engine + sandbox pool + scorer) ──trajectories──▶ driver ──kept──▶ learner group
          ▲                                                                                    (torch.distributed
          └──────────────── versioned weights (rank 0's state dict, one object-store copy) ◀────  gloo / NCCL)

Per step: the step's prompts are split into contiguous shards (group ids as in one process) and rolled out on the
workers through `RolloutPipeline` (sync: on the current weights; async: up to train.max_staleness steps ahead);
filter (+ dynamic-sampling refills); the learner ranks run the update phase data-parallel; rank 0's weights go to
every worker with the new version; periodic eval on worker 0; one metrics row with the same names as the local
loop; transcripts; checkpoints from rank 0 (the same format `zerotir train --resume` reads).

Local mode (train.ray_address '') starts Ray with this machine's CPUs (and GPUs, if any). With GPUs, every actor
gets one GPU from a placement group: learner bundles first (packed, so NCCL ranks share nodes), then rollout
bundles; sandboxes run inside the rollout actors, on their CPUs, never on a learner's.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zerotir.config import Config
from zerotir.distributed.pipeline import RolloutBatch, RolloutPipeline, merge_batches, shard
from zerotir.telemetry import MetricsWriter, get_logger, setup_logging

log = get_logger("distributed")


@dataclass
class RayHandle:
    """The refs of one step's per-worker rollouts; `result()` gathers and merges them in worker order."""

    step: int
    refs: list[Any]

    def result(self) -> RolloutBatch:
        import ray

        return merge_batches(self.step, ray.get(self.refs))


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


class Topology:
    """Learner ranks and rollout workers placed on the cluster."""

    def __init__(self, cfg: Config):
        import ray

        from zerotir.distributed.actors import LearnerWorker, RolloutWorker

        t = cfg.train
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
        """Rank 0's weights → every worker (one object-store copy); calls queue behind in-flight rollouts."""
        sd = self.learners[0].policy_state_dict.remote()
        return [w.update_weights.remote(sd, version) for w in self.workers]

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


def ray_train(cfg: Config, run_dir: str | None = None, resume: str | bool = False) -> Path:
    """Train per `cfg` on Ray (train.rollout_workers actors, train.learners data-parallel ranks); returns the run
    directory, laid out exactly like the local loop's. `resume` / `run_dir` mean what they mean for
    `zerotir.train.loop.train` (checkpoints are interchangeable between the two backends)."""
    import ray

    from zerotir.algos.filters import filter_trajectories
    from zerotir.train.loop import (_cfg_dict, _truncate_metrics, refill_groups, resolve_run_dir, seed_everything,
                                    step_row, validate_inputs)
    from zerotir.train.sinks import Sinks, write_transcripts
    from zerotir.train.stats import PromptSampler

    setup_logging(cfg.logging.level)
    hf_view = copy.deepcopy(cfg)
    hf_view.rollout.engine = "hf"  # the local loop's input check refuses vllm; the engine is chosen by the actors
    train_set, eval_set = validate_inputs(hf_view)
    run, ckpt = resolve_run_dir(cfg, resume, run_dir)
    seed_everything(cfg.train.seed)
    t, a = cfg.train, cfg.algo
    sampler = PromptSampler(train_set, seed=t.seed, shuffle=cfg.data.shuffle)
    started = init_ray(cfg)
    topo = None
    try:
        topo = Topology(cfg)
        start = 0
        if ckpt is not None:  # every rank loads weights + optimizer state; the driver restores the data cursor
            state = ray.get([lw.load_checkpoint.remote(str(ckpt)) for lw in topo.learners])[0]
            sampler.restore(state["data_cursor"])
            start = int(state["step"])
            log.info("resumed from %s (step %d)", ckpt, start)
        _truncate_metrics(run / "metrics.jsonl", start)
        ray.get(topo.sync_weights(start))  # engines start from the learner's exact weights
        n_roll = len(topo.workers)
        log.info("ray: %d rollout workers, %d learners, %s mode; run dir %s", n_roll, len(topo.learners),
                 "async" if t.async_rollout else "sync", run)

        def launch_problems(step: int, problems, offset: int, seed: int) -> RayHandle:
            refs = [topo.workers[i % n_roll].rollout.remote(step, part, offset + off, seed)
                    for i, (off, part) in enumerate(shard(problems, n_roll))]
            return RayHandle(step, refs)

        cursors: dict[int, dict[str, int]] = {}  # data cursor before each step's prompts were taken
        step_problems: dict[int, list] = {}       # a step re-launched (its batch was too stale) keeps its prompts

        def launch(step: int) -> RayHandle:  # prompts are taken in step order, so sync and async see the same ones
            if step not in step_problems:
                cursors[step] = dict(sampler.cursor)
                step_problems[step] = sampler.take(t.prompts_per_step)
            return launch_problems(step, step_problems[step], 0, t.seed * 1_000_003 + step * 101)

        pipe = RolloutPipeline(launch, max_staleness=t.max_staleness, async_mode=t.async_rollout)
        pipe.start(start + 1)
        writer = MetricsWriter(run)
        with Sinks(run, cfg.logging, _cfg_dict(cfg)) as sinks:
            for step in range(start + 1, t.steps + 1):
                t0 = time.perf_counter()
                batch = pipe.get(step, version=step - 1, last_step=t.steps)
                step_problems.pop(step, None)
                trajs, scored = batch.trajectories, dict(batch.metrics)
                kept, fstats = filter_trajectories(trajs, a)
                trajs, kept, fstats, r2, w2 = refill_groups(
                    trajs, kept, fstats, cfg, step, sampler,
                    lambda probs, off, seed: launch_problems(step, probs, off, seed).result().unpacked())
                t_roll = scored.pop("perf/rollout_seconds", 0.0) + r2
                t_rew = scored.pop("perf/reward_seconds", 0.0) + w2
                # ---- data-parallel update on every learner rank (stats are combined across ranks)
                t_up = time.perf_counter()
                kept_ref = ray.put(kept)
                update_stats = ray.get([lw.update.remote(kept_ref, step) for lw in topo.learners])[0]
                t_up = time.perf_counter() - t_up
                # ---- versioned weight sync (queued behind in-flight async rollouts), periodic eval on worker 0
                synced = topo.sync_weights(step)
                if not t.async_rollout:
                    ray.get(synced)
                is_last = step == t.steps
                ev = {}
                if eval_set and ((t.eval_every and step % t.eval_every == 0) or is_last):
                    ev = ray.get(topo.workers[0].evaluate.remote(eval_set, step))
                row = step_row(step, sampler.epoch, trajs, kept, scored, fstats, update_stats, ev,
                               {"perf/rollout_seconds": t_roll, "perf/reward_seconds": t_rew,
                                "perf/update_seconds": t_up}, t0)
                writer.write(row)
                sinks.write(row)
                if t.transcripts_every and (step % t.transcripts_every == 0 or step == 1):
                    write_transcripts(run, step, trajs)
                if (t.save_every and step % t.save_every == 0) or is_last:
                    # the cursor before any prompts of a step launched ahead (async), so a resume re-takes them
                    cursor = cursors.get(step + 1, sampler.cursor)
                    ray.get(topo.learners[0].save_checkpoint.remote(str(run), step, {"data_cursor": cursor},
                                                                    t.keep_checkpoints))
        pipe.drain()
        if pipe.dropped_batches:
            log.warning("%d rollout batches were older than train.max_staleness and were regenerated",
                        pipe.dropped_batches)
    finally:
        if topo is not None:
            topo.close()
        if started:
            ray.shutdown()
    return run
