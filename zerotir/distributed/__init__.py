"""zerotir.distributed: THE training loop's phases on a Ray cluster, and the vLLM engine.

    run_dir = zerotir.train.loop.train(cfg, backend_factory=zerotir.distributed.ray_backend())
                                                 # what `zerotir train --backend ray` runs

Modules: `driver` (`RayBackend`: the `zerotir.train.backend.Backend` protocol on Ray actors; topology), `actors`
(rollout workers, learner ranks), `dp` (data-parallel gradient sync), `vllm_engine` (GPU engine). The loop drives the
backend, never the reverse: nothing here imports `zerotir.train.loop`. Ray and vLLM are imported only when used, so
importing this package is cheap.
"""

from __future__ import annotations

from typing import Any


def ray_backend() -> Any:
    """The Ray backend class (a `Backend` factory: RayBackend(cfg)); a clear error when Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SystemExit("error: train.backend=ray needs Ray: pip install 'zerotir[ray]'") from None
    from zerotir.distributed.driver import RayBackend

    return RayBackend


__all__ = ["ray_backend"]
