from pathlib import Path

import pytest
from analysis_synth import write_run


@pytest.fixture
def synthetic_runs(tmp_path) -> list[Path]:
    """Two seeds with tools (budget 2), two seeds without tools; one run is still going (partial last line)."""
    runs = [write_run(tmp_path / "runs" / f"tools-s{s}", s, 2, partial_last_line=(s == 1)) for s in (0, 1)]
    runs += [write_run(tmp_path / "runs" / f"notools-s{s}", s, 0) for s in (0, 1)]
    return runs
