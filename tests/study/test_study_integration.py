"""The tiny study end to end (configs/studies/tiny.yaml: 2 sizes x 2 seeds x 2 steps) with real training: the study
process is SIGKILLed once its first cell has finished, then re-run; the finished cell is skipped, the killed one
resumes, predictions.json is written before the held-out (largest size) cells start, and the analysis runs."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from zerotir.config import BUILTIN_CONFIGS
from zerotir.study import load_spec, run_study, state

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TINY = BUILTIN_CONFIGS / "studies" / "tiny.yaml"


def wait_for(cond, timeout_s: float, what: str):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


def lock_is_free(run: Path) -> bool:
    """True when no process holds the cell's run-dir lock (the cell process is gone)."""
    if not (run / ".lock").exists():
        return True
    with open(run / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return True


def starts(run: Path) -> int:
    """How many times a cell process started on this run dir."""
    log = run / state.LOG_FILE
    return log.read_text(errors="replace").count("study cell ") if log.is_file() else 0


def tiny_spec(tmp_path: Path) -> Path:
    """tiny.yaml; while toy-0.2m is neither shipped nor built, a copy whose small size is a link to the shipped toy
    base (the study machinery is what is tested here, not the model family)."""
    from zerotir.toy.cache import cached_dir, is_built, shipped_dir

    if shipped_dir("toy-0.2m") or is_built(cached_dir("toy-0.2m")):
        return TINY
    from zerotir.models import TOY_BASE_DIR

    (tmp_path / "toy-small").symlink_to(TOY_BASE_DIR)
    data = yaml.safe_load(TINY.read_text())
    data["grid"]["model.path"] = [str(tmp_path / "toy-small"), "toy"]
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return tmp_path / "tiny.yaml"


def test_tiny_study_killed_and_resumed(tmp_path):
    spec_path = tiny_spec(tmp_path)
    spec = load_spec(spec_path)
    names = [c.name for c in spec.cells]
    first, second = names[0], names[1]
    study = tmp_path / "study"
    out = open(tmp_path / "study.out", "w")
    proc = subprocess.Popen([sys.executable, "-m", "zerotir.cli", "study", str(spec_path), "--out", str(study),
                             "--jobs", "1", "--preregister", "--no-analysis"], cwd=REPO, stdout=out,
                            stderr=subprocess.STDOUT)
    try:
        runs = {n: state.run_dir(study, n) for n in names}
        wait_for(lambda: state.is_finished(runs[first], 2) or proc.poll() is not None, 300, "the first cell")
        # kill once the second cell has written its step-1 checkpoint, so the re-run has something to resume from
        wait_for(lambda: (runs[second] / "checkpoints" / "step_000001" / "state.json").is_file()
                 or proc.poll() is not None, 120, "the second cell's first checkpoint")
        assert proc.poll() is None, (tmp_path / "study.out").read_text()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()
    # the cell that was running dies with the study (no orphan keeps writing into its run dir)
    wait_for(lambda: lock_is_free(runs[second]), 20, "the running cell to die with the study")
    assert starts(runs[first]) == 1 and not (study / "predictions.json").exists()
    held = spec.held_out
    assert held == names[2:] and all(starts(runs[n]) == 0 for n in held)
    second_done = state.is_finished(runs[second], 2)  # only if it finished in the moment before the kill

    lines: list[str] = []
    run_study(spec, study, jobs=2, preregister=True, say=lines.append)
    assert all(state.is_finished(runs[n], 2) for n in names)
    assert starts(runs[first]) == 1  # finished before the kill: skipped
    if not second_done:  # killed after its step-1 checkpoint: the re-run continued from it
        assert starts(runs[second]) == 2
        assert "resumed from" in (runs[second] / state.LOG_FILE).read_text(errors="replace")
    for n in names:
        rows = [json.loads(x) for x in (runs[n] / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows][-2:] == [1, 2]
    pred = study / "predictions.json"
    doc = json.loads(pred.read_text())
    assert sorted(doc["held_out_runs"]) == sorted(held) and doc["git_revision"]
    # written before the held-out cells started (each cell opens its lock file when it starts)
    assert all(pred.stat().st_mtime <= (runs[n] / ".lock").stat().st_mtime for n in held)
    assert (study / "report.md").stat().st_size > 0 and json.loads((study / "fits.json").read_text())
    saved = yaml.safe_load((study / "spec.yaml").read_text())
    assert list(saved["resolved"]["cells"]) == names
    assert any(x.startswith("[4/4 done · 0 running · 0 left") for x in lines), lines
