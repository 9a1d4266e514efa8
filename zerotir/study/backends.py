"""Where a cell's process runs: here (`LocalBackend`, a subprocess) or on a Ray cluster (`RayBackend`, one Ray task
per cell that starts the same subprocess on whichever node has the CPUs).

Both run `python -m zerotir.study.cell RUN_DIR --threads K` with stdout/stderr appended to RUN_DIR/train.log and
the BLAS/OpenMP thread variables set to K, so N runs on one machine share its cores instead of fighting over them.
A crash or kill of a cell ends that cell only. The child gets SIGKILL when the process that started it dies
(Linux `PR_SET_DEATHSIG`), so a killed study leaves no orphan training on its run dirs; the cell's run-dir lock
covers every other case. Ray needs the study dir on a filesystem every node sees, and absolute data/model paths.

Backend protocol (the scheduler in `runner.py` knows nothing else): `start(run_dir) -> handle`,
`poll(handle) -> exit code or None`, `stop(handle)`, `close()`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from zerotir.study.state import LOG_FILE

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def cpu_count() -> int:
    """CPUs this process may use (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def threads_per_run(jobs: int, cpus: int | None = None) -> int:
    """CPU threads each of `jobs` concurrent runs gets: an equal share, at least 1."""
    return max(1, (cpus or cpu_count()) // max(1, jobs))


def cell_command(run_dir: Path, threads: int) -> list[str]:
    return [sys.executable, "-m", "zerotir.study.cell", str(run_dir), "--threads", str(threads)]


def cell_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({k: str(threads) for k in THREAD_VARS})
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def launch(run_dir: Path, threads: int, cwd: str | None = None) -> subprocess.Popen:
    """Start one cell process, its output appended to RUN_DIR/train.log; relative paths in its config resolve
    against `cwd` (the study's working directory)."""
    log = open(Path(run_dir) / LOG_FILE, "ab")
    try:
        return subprocess.Popen(cell_command(run_dir, threads), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=cell_env(threads),
                                cwd=cwd if cwd and Path(cwd).is_dir() else None,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    finally:
        log.close()  # the child holds its own descriptor


class LocalBackend:
    def __init__(self, threads: int):
        self.threads = threads

    def start(self, run_dir: Path) -> subprocess.Popen:
        return launch(run_dir, self.threads)

    def poll(self, handle: subprocess.Popen) -> int | None:
        return handle.poll()

    def stop(self, handle: subprocess.Popen) -> None:
        if handle.poll() is None:
            handle.terminate()
            try:
                handle.wait(timeout=10)
            except subprocess.TimeoutExpired:
                handle.kill()
                handle.wait()

    def close(self) -> None:
        pass


def run_cell_blocking(run_dir: str, threads: int, cwd: str) -> int:
    """Body of the Ray task: run the cell process to the end on this node and return its exit code."""
    proc = launch(Path(run_dir), threads, cwd)
    try:
        return proc.wait()
    finally:
        if proc.poll() is None:  # the task was cancelled
            proc.kill()


class RayBackend:
    """One `ray.remote(num_cpus=threads)` task per cell; Ray places it on a node with that many free CPUs."""

    def __init__(self, threads: int, address: str = ""):
        import ray

        self.ray, self.threads = ray, threads
        self._owns = not ray.is_initialized()
        if self._owns:
            ray.init(address=address or None, ignore_reinit_error=True, log_to_driver=False)
        self._task = ray.remote(num_cpus=threads, max_retries=0)(run_cell_blocking)

    def start(self, run_dir: Path):
        return self._task.remote(str(Path(run_dir).resolve()), self.threads, os.getcwd())

    def poll(self, handle) -> int | None:
        ready, _ = self.ray.wait([handle], timeout=0)
        if not ready:
            return None
        try:
            return int(self.ray.get(handle))
        except Exception:  # the task itself died (node lost, cancelled): a failed cell, not a failed study
            return -1

    def stop(self, handle) -> None:
        self.ray.cancel(handle, force=True)

    def close(self) -> None:
        if self._owns:
            self.ray.shutdown()


def make_backend(name: str, threads: int, address: str = ""):
    if name == "local":
        return LocalBackend(threads)
    if name == "ray":
        try:
            return RayBackend(threads, address)
        except ImportError:
            raise ValueError("--backend ray needs Ray (pip install 'zerotir[ray]')") from None
    raise ValueError(f"--backend: unknown backend '{name}' (local, ray)")
