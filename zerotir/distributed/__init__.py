"""zerotir.distributed: the same training loop on a Ray cluster, the async rollout pipeline, and the vLLM engine.

    from zerotir.distributed import ray_train
    run_dir = ray_train(cfg)          # cfg.train.backend == 'ray'; `zerotir train --backend ray` calls this

Modules: `driver` (ray_train, topology), `actors` (rollout workers, learner ranks), `dp` (data-parallel gradient
sync), `pipeline` (staleness-bounded async rollouts, pure Python), `vllm_engine` (GPU engine). Ray and vLLM are
imported only when used, so importing this package is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def ray_train(cfg: Any, run_dir: str | None = None, resume: str | bool = False) -> Path:
    """Train on Ray per `cfg` (see `zerotir.distributed.driver`); returns the run directory."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SystemExit("error: train.backend=ray needs Ray: pip install 'zerotir[ray]'") from None
    from zerotir.distributed.driver import ray_train as _ray_train

    return _ray_train(cfg, run_dir=run_dir, resume=resume)


__all__ = ["ray_train"]
