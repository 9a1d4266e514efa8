"""The Ray backend: a 2-cell study (one size x 2 seeds x 2 steps) run by `zerotir study --backend ray` on a local
Ray started by the command, one task per cell with num_cpus = its thread share. Run in a subprocess so this test
process never becomes a Ray driver (see tests/conftest.py on the sockets a driver keeps). Slow tier: Ray start-up
dominates on 2 cores."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from zerotir.config import BUILTIN_CONFIGS
from zerotir.study import state

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_ray_backend_runs_each_cell_as_a_task(tmp_path):
    pytest.importorskip("ray")
    data = yaml.safe_load((BUILTIN_CONFIGS / "studies" / "tiny.yaml").read_text())
    data["name"] = "tiny-ray"
    data["grid"] = {"model.path": ["toy"], "train.seed": [0, 1]}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    study = tmp_path / "study"
    r = subprocess.run([sys.executable, "-m", "zerotir.cli", "study", str(spec), "--out", str(study), "--backend",
                        "ray", "--jobs", "2", "--no-analysis"], cwd=REPO, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "backend ray: 2 at a time, 1 CPU threads each" in r.stdout
    for seed in (0, 1):
        run = state.run_dir(study, f"size=toy,seed={seed}")
        assert state.is_finished(run, 2)
        assert "1 torch threads" in (run / state.LOG_FILE).read_text(errors="replace")
