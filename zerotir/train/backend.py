"""Where the training loop's phases run: the backend protocol and the single-process backend.

`zerotir.train.loop.train` is the only driver loop; it talks to a `Backend`, which owns the model copies (learner
and rollout engines), the sandbox and the reward scorer:

    launch(step, problems, group_offset, seed) -> Handle     rollout + reward; Handle.result() -> RolloutResult
    update(kept, step) -> UpdateResult                        collate → advantages → optimizer steps
    sync_weights(version, wait)                               learner weights → rollout engines
    evaluate(problems, step) -> EvalResult                    held-out eval (THE eval function)
    save(run_dir, step, state, keep) / load(checkpoint) -> state
    shape: ModelShape                                         for compute accounting
    progress: Progress                                        work done within the running phase (for the live view)
    close()

`LocalBackend` runs everything in this process (rollouts are generated when launched, so `Done` handles).
`zerotir.distributed.driver.RayBackend` implements the same protocol with Ray actors; `zerotir train --backend
ray` passes it to `train`. Data parallelism belongs to the backend's learner ranks, never to the loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence

from zerotir.config import Config
from zerotir.records import EvalResult, UpdateResult
from zerotir.telemetry import Progress
from zerotir.train.compute import ModelShape, shape_of, update_flops
from zerotir.train.pipeline import Done, Handle
from zerotir.types import Problem, Trajectory


class Backend(Protocol):
    shape: ModelShape
    progress: Progress

    def launch(self, step: int, problems: Sequence[Problem], group_offset: int, seed: int) -> Handle: ...

    def update(self, kept: Sequence[Trajectory], step: int) -> UpdateResult: ...

    def sync_weights(self, version: int, wait: bool = True) -> None: ...

    def evaluate(self, problems: Sequence[Problem], step: int) -> EvalResult: ...

    def save(self, run_dir: Path, step: int, state: dict[str, Any], keep: int) -> None: ...

    def load(self, checkpoint: Path) -> dict[str, Any]: ...

    def close(self) -> None: ...


def update_result(stats: list[dict[str, float]], kept: Sequence[Trajectory], cfg: Config, shape: ModelShape, *,
                  use_kl: bool, critic: bool) -> UpdateResult:
    """The update phase's record: per-step stats and its compute (see zerotir.train.compute)."""
    from zerotir.train.update import off_policy

    passes = int(use_kl) + int(critic) + int(off_policy(cfg))
    flops, tokens = update_flops(shape, kept, epochs=cfg.train.ppo_epochs,
                                 shared_prompts=cfg.train.share_prompt_forward, forward_only_passes=passes,
                                 critic=critic)
    return UpdateResult(steps=tuple(stats), trained_tokens=tokens, flops=flops)


def check_sandbox(sandbox: Any, cfg: Any) -> None:
    """A remote sandbox service must answer its health check before anything heavy starts (a local pool has
    already proven itself by starting)."""
    if cfg.backend != "remote":
        return
    from zerotir.sandbox import SandboxUnavailable

    h = sandbox.health()
    if not h.get("ok"):
        raise SandboxUnavailable(f"sandbox.url {cfg.url} is not healthy ({h.get('error') or h}); start it with "
                                 "`zerotir sandbox serve` or fix sandbox.url")


def check_sandbox_before_start(cfg: Config) -> None:
    """For a backend whose sandboxes start elsewhere (Ray rollout workers), checked before it starts anything: a
    remote service (every replica of a comma-separated sandbox.url) answers its health check, as `LocalBackend`
    checks it; a local pool's isolation level is valid, and its layers present when the workers run on this machine
    (local Ray), so a missing bubblewrap is one line here rather than a failed actor."""
    from zerotir.sandbox import ISOLATION_LEVELS, SandboxUnavailable, check_isolation, make_sandbox

    sb = cfg.sandbox
    if sb.backend == "remote":
        with make_sandbox(sb) as client:
            check_sandbox(client, sb)
    elif not cfg.train.ray_address:
        check_isolation(sb.isolation)
    elif sb.isolation not in ISOLATION_LEVELS:
        raise SandboxUnavailable(f"unknown isolation level {sb.isolation!r}; choose one of {ISOLATION_LEVELS}")


class LocalBackend:
    """Learner, one HF engine (its own copy of the weights), sandbox pool and reward scorer in this process."""

    def __init__(self, cfg: Config):
        from zerotir.reward import RewardScorer
        from zerotir.rollout.engines import make_engine
        from zerotir.sandbox import make_sandbox
        from zerotir.train.learner import Learner

        self.cfg = cfg
        self.progress = Progress()
        self.sandbox = make_sandbox(cfg.sandbox).__enter__()         # before any model loads: fails fast
        self.scorer = None
        try:
            check_sandbox(self.sandbox, cfg.sandbox)
            self.scorer = RewardScorer(cfg.reward).__enter__()
            self.learner = Learner(cfg)
            self.engine = make_engine(cfg, device=str(self.learner.device))
        except BaseException:
            self.close()
            raise
        self.shape = shape_of(self.learner.policy)

    def launch(self, step: int, problems: Sequence[Problem], group_offset: int, seed: int) -> Done:
        from zerotir.train.phases import generate

        from zerotir.algos.filters import samples_per_prompt

        self.progress.begin("rollout", len(problems) * samples_per_prompt(self.cfg))
        try:
            # The engine's own version, as the Ray workers report it: in async runs it lags `step - 1`, and
            # rollout/staleness_* and the pipeline's freshness check read it.
            return Done(generate(problems, self.engine, self.sandbox, self.scorer, self.cfg,
                                 version=self.engine.policy_version,
                                 group_offset=group_offset, seed=seed, step=step, progress=self.progress))
        finally:
            self.progress.end("rollout")

    def update(self, kept: Sequence[Trajectory], step: int) -> UpdateResult:
        from zerotir.train.update import update_phase

        self.progress.begin("update", self.cfg.train.ppo_epochs * self.cfg.train.minibatches if kept else 0)
        try:
            stats = update_phase(self.learner, list(kept), self.cfg, step, self.progress)
        finally:
            self.progress.end("update")
        return update_result(stats, kept, self.cfg, self.shape, use_kl=self.learner.use_kl,
                             critic=self.learner.critic is not None)

    def sync_weights(self, version: int, wait: bool = True) -> None:
        self.engine.update_weights(self.learner.policy_state_dict(), version)

    def evaluate(self, problems: Sequence[Problem], step: int) -> EvalResult:
        from zerotir.train.phases import heldout_eval

        return heldout_eval(problems, self.engine, self.sandbox, self.scorer, self.cfg, step)

    def save(self, run_dir: Path, step: int, state: dict[str, Any], keep: int) -> None:
        from zerotir.train.checkpoint import save_checkpoint

        save_checkpoint(run_dir, step, self.learner, state, keep=keep)

    def load(self, checkpoint: Path) -> dict[str, Any]:
        from zerotir.train.checkpoint import load_checkpoint

        return load_checkpoint(checkpoint, self.learner)

    def close(self) -> None:
        for res in (self.scorer, self.sandbox):
            if res is None:
                continue
            try:
                res.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - best-effort shutdown; the run's results are already written
                pass
