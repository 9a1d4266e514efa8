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


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the xdist_group marks added here
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
    # Order: the sandbox files first, then the heavy files (longest first), then the rest. Every file is one unit
    # of work under pytest-xdist (`make test`: `-n 2 --dist loadgroup --no-loadscope-reorder`, so units go out in
    # this order and each worker runs its units in it). Why the sandbox first: its descriptor and process census
    # counts everything its process holds, and a Ray driver (started or imported by later files) keeps threads and
    # sockets after ray.shutdown(); first on every worker, the census never sees them. Heavy files early keep a long
    # unit from being the run's tail.
    root = Path(__file__).resolve().parent
    rel = {item: item.path.resolve().relative_to(root).as_posix() for item in items}

    def rank(item) -> tuple[int, int]:
        if rel[item].startswith("sandbox/"):
            return (0, 0)
        if rel[item] in HEAVY_FIRST:
            return (1, HEAVY_FIRST.index(rel[item]))
        return (2, 0)

    items.sort(key=rank)  # stable: collection order within each rank
    for item in items:
        item.add_marker(pytest.mark.xdist_group(rel[item]))


HEAVY_FIRST = ("study/test_study_integration.py", "train/test_train_integration.py", "distributed/test_fsdp.py",
               "unit/test_first_hour.py", "distributed/test_ray_learners.py", "analysis/test_analysis_study.py",
               "models/test_gguf_import.py", "toy/test_demo_integration.py")
"""The test files that took longest (each 30-110 s of one worker, measured 2026-11-30), longest first: a scheduling
hint only (it changes when a file runs, never what it checks)."""


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
