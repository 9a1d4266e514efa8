"""Test tiers: unit (default), integration (marked, runs in `make test`), slow and gpu (skipped unless enabled)."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config):
    # Under pytest-xdist each worker gets an equal share of the cores: two workers each running torch on every core
    # oversubscribe them, and OpenMP's spinning threads then slow both. Subprocesses inherit the share.
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        share = str(max(1, (os.cpu_count() or 1) // int(workers)))
        os.environ.setdefault("OMP_NUM_THREADS", share)
        os.environ.setdefault("MKL_NUM_THREADS", share)
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items):
    run_slow = os.environ.get("ZEROTIR_SLOW") == "1"
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_gpu = False
    skip_slow = pytest.mark.skip(reason="slow test: set ZEROTIR_SLOW=1 (make test-slow) to run")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is present on this machine")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)
    # Tests that start a Ray cluster from this process run last: after ray.shutdown() its driver keeps threads and
    # sockets here, and the sandbox tests' descriptor-leak checks count every descriptor of the process.
    # Under pytest-xdist (`make test` runs `-n 2 --dist loadgroup`), one worker runs the SERIAL_PREFIXES files, in
    # this order and first (the longest unit of work: started last it would be the run's tail); every other file is
    # one unit of work (its module fixtures are built once).
    root = Path(__file__).resolve().parent
    serial = {item: item.path.resolve().relative_to(root).as_posix().startswith(SERIAL_PREFIXES) for item in items}
    items.sort(key=lambda item: (not serial[item], item.path.parent.name == "distributed"))
    for item in items:
        rel = item.path.resolve().relative_to(root).as_posix()
        item.add_marker(pytest.mark.xdist_group("serial" if serial[item] else rel))


SERIAL_PREFIXES = ("sandbox/", "distributed/", "study/test_study_ray.py", "unit/test_first_hour.py")
"""Test files that share one xdist worker, in collection order: the sandbox's descriptor and process census (which
counts everything its process holds) and the files that start or import Ray in-process (Ray's driver keeps threads
and sockets after shutdown)."""


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2-style model + BPE tokenizer saved as an HF directory (built once per session)."""
    from zerotir.models.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def write_problems_file(path: Path, n: int = 8) -> Path:
    """n easy multiplication problems as a JSONL training/eval set."""
    import json

    rows = [{"id": f"q{i}", "problem": f"What is {i + 2} * {i + 3}?", "answer": str((i + 2) * (i + 3))}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def small_train_cfg(tmp_path):
    """Factory: a Config for a few-step run of `model_dir` on 8 easy problems, sized for 2 CPU cores (tests adjust
    what they study)."""
    import shutil

    from zerotir.config import Config

    def make(model_dir: Path, steps: int = 3) -> "Config":
        data = write_problems_file(tmp_path / "problems.jsonl")
        cfg = Config()
        cfg.model.path, cfg.model.device = str(model_dir), "cpu"
        cfg.data.train, cfg.data.eval, cfg.data.eval_limit = str(data), str(data), 2
        r = cfg.rollout
        r.template, r.n_samples, r.max_new_tokens_per_turn, r.max_total_tokens, r.batch_size = "zerotir", 2, 12, 32, 8
        r.max_tool_output_tokens = 16
        cfg.sandbox.workers, cfg.sandbox.timeout_s = 1, 2.0
        cfg.sandbox.isolation = "full" if shutil.which("bwrap") else "rlimits"
        cfg.reward.verify_workers = 1
        # A random tiny model almost never earns a reward; the entropy bonus and KL term give every step a gradient.
        cfg.algo.name, cfg.algo.entropy_coef, cfg.algo.kl_coef = "grpo", 0.01, 0.05
        cfg.optim.lr = 1e-3
        t = cfg.train
        t.steps, t.prompts_per_step, t.micro_batch_tokens, t.eval_every, t.save_every = steps, 2, 256, 2, 1
        t.keep_checkpoints, t.transcripts_every = 10, 2
        cfg.eval.samples, cfg.eval.max_tool_calls = 1, 1
        cfg.logging.live = False
        return cfg

    return make
