"""The study dir's rules (finished cells, continuation) and the scheduler, driven by a fake backend."""

import json
from pathlib import Path

import pytest

from zerotir.study import state
from zerotir.study.backends import cell_env, threads_per_run
from zerotir.study.runner import Progress, eta_seconds, fmt_seconds, schedule
from zerotir.study.spec import SpecError, parse_spec


def spec_of(grid, **extra):
    return parse_spec(Path("spec.yaml"), {"name": "s", "base": "toy", "grid": grid, **extra})


def write_rows(run: Path, steps):
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in steps) + '{"step": 9')


def add_ckpt(run: Path, step: int):
    d = run / "checkpoints" / f"step_{step:06d}"
    d.mkdir(parents=True)
    (d / "state.json").write_text("{}")


def test_finished_needs_the_last_row_and_its_complete_checkpoint(tmp_path):
    run = tmp_path / "r"
    write_rows(run, [1, 2, 3])  # the half-written trailing line is ignored
    assert state.last_step(run) == 3 and not state.is_finished(run, 3)
    add_ckpt(run, 2)
    assert not state.is_finished(run, 3)  # killed between the last row and the last checkpoint
    add_ckpt(run, 3)
    assert state.is_finished(run, 3)
    (run / "checkpoints" / "step_000003" / "state.json").unlink()  # a checkpoint without state.json is incomplete
    assert not state.is_finished(run, 3)
    assert state.last_step(tmp_path / "none") == 0


def test_continuation_allows_a_superset_only(tmp_path):
    s1 = spec_of({"train.seed": [0, 1]})
    assert state.prepare(tmp_path, s1) == ["seed=0", "seed=1"]
    assert (tmp_path / "runs" / "seed=1" / "config.yaml").is_file() and (tmp_path / "spec.yaml").is_file()
    assert state.prepare(tmp_path, s1) == []
    assert state.prepare(tmp_path, spec_of({"train.seed": [0, 1, 2]})) == ["seed=2"]
    # seed=2 never started: dropping it is allowed and removes its dir; once started, dropping it is an error
    assert state.prepare(tmp_path, s1) == [] and not (tmp_path / "runs" / "seed=2").exists()
    state.prepare(tmp_path, spec_of({"train.seed": [0, 1, 2]}))
    write_rows(tmp_path / "runs" / "seed=2", [1])
    with pytest.raises(SpecError, match="cell seed=2 has started and is no longer in the spec"):
        state.prepare(tmp_path, s1)
    with pytest.raises(SpecError, match=r"cell seed=0 changed \(train.steps: 25 → 5\)"):
        state.prepare(tmp_path, spec_of({"train.seed": [0, 1, 2]}, overrides={"train.steps": 5}))


def test_first_difference():
    assert state.first_difference({"a": 1, "b": 2}, {"a": 1, "b": 2}) == ""
    assert state.first_difference({"a": 1}, {"a": 1, "b": 2}) == "b: '<unset>' → 2"


def test_eta_and_threads():
    # 10 of 40 steps done this session in 100 s: 0.1 step/s, 25 steps left (5 were done before) → 250 s
    assert eta_seconds(15, 5, 40, 100.0) == pytest.approx(250.0)
    assert eta_seconds(5, 5, 40, 100.0) is None and eta_seconds(0, 0, 40, 0.0) is None
    assert fmt_seconds(250) == "4m10s" and fmt_seconds(3725) == "1h02m" and fmt_seconds(None) == "?"
    assert threads_per_run(2, cpus=16) == 8 and threads_per_run(3, cpus=16) == 5 and threads_per_run(4, cpus=2) == 1
    env = cell_env(3)
    assert env["OMP_NUM_THREADS"] == "3" and env["MKL_NUM_THREADS"] == "3"


class FakeBackend:
    """Each cell 'runs' for a fixed number of polls, then exits with its code; records concurrency."""

    def __init__(self, polls: dict[str, int], codes: dict[str, int]):
        self.polls, self.codes = dict(polls), codes
        self.running, self.max_running, self.stopped, self.order = set(), 0, [], []

    def start(self, run_dir):
        name = Path(run_dir).name
        self.running.add(name)
        self.order.append(name)
        self.max_running = max(self.max_running, len(self.running))
        return name

    def poll(self, name):
        self.polls[name] -= 1
        if self.polls[name] > 0:
            return None
        self.running.discard(name)
        return self.codes.get(name, 0)

    def stop(self, name):
        self.stopped.append(name)


def test_schedule_runs_at_most_jobs_at_once_and_records_failures(tmp_path):
    names = ["a", "b", "c", "d", "e"]
    runs = {n: tmp_path / n for n in names}
    be = FakeBackend({"a": 3, "b": 1, "c": 2, "d": 1, "e": 2}, {"c": 1})
    lines = []
    prog = Progress(runs, {n: 1 for n in names})
    codes = schedule(names, runs, be, 2, prog, lines.append, poll_s=0)
    assert codes == {"a": 0, "b": 0, "c": 1, "d": 0, "e": 0}
    assert be.max_running == 2 and be.order == names
    assert prog.done == {"a", "b", "d", "e"} and prog.failed == {"c": 1} and not prog.running
    assert any("FAILED c (exit 1" in x and "c/train.log" in x for x in lines)
    assert lines[-1].startswith("[4/5 done · 0 running · 0 left · 1 failed")


def test_schedule_stops_running_cells_when_interrupted(tmp_path):
    runs = {n: tmp_path / n for n in "ab"}
    be = FakeBackend({"a": 10**6, "b": 10**6}, {})

    def say(line):
        if "started b" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        schedule(["a", "b"], runs, be, 2, Progress(runs, {"a": 1, "b": 1}), say, poll_s=0)
    assert sorted(be.stopped) == ["a", "b"]
