"""A new user's first hour, as a test (issue 18): the README's commands run from a directory outside the checkout,
and bad inputs each give one error line, exit 2 and leave no half-written run dir.

The walk runs the real `zerotir` command in subprocesses with tiny sizes (1 train step, 2 prompts, 2 samples): the
installed script for `--help` and `sandbox exec`, and the rest in one interpreter (`_zerotir_session`) so torch and
transformers are imported once, not per command, with one sandbox worker and one verifier process. It is marked
integration: 50 s of CPU on the 2-core machine (86 s when each command had its own interpreter, two workers of each
kind, and analyze made its full report). The bad-input table runs in-process (one import), a few seconds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zerotir.cli import app
from zerotir.cli_common import preset_for, quiet_libraries
from zerotir.config import load_config
from zerotir.data import DataError, data_dir, load_problems
from zerotir.sandbox import Sandbox, SandboxUnavailable, check_isolation
from zerotir.train.sinks import wandb_mode

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--set", "train.steps=1", "--set", "train.prompts_per_step=2", "--set", "rollout.n_samples=2",
        "--set", "train.eval_at_start=false", "--set", "data.eval_limit=2"]
# One sandbox worker and one verifier process: each is an interpreter of its own (about a third of the walk's CPU).
LEAN = ["--set", "sandbox.workers=1", "--set", "reward.verify_workers=1"]
# A warning attributed to one of our files ("…/zerotir/x.py:12: FutureWarning: …") fails the walk; library-internal
# ones are not ours to fix.
OUR_WARNING = re.compile(r"(\S*/zerotir/\S+\.py):\d+: (DeprecationWarning|FutureWarning)")


def _isolation() -> str:
    """The preset's 'full' where this machine provides it (root + bubblewrap), else the explicit weaker level."""
    try:
        check_isolation("full")
        return "full"
    except SandboxUnavailable:
        return "rlimits"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_HUB_DISABLE_PROGRESS_BARS")}
    env["PYTHONWARNINGS"] = "default::DeprecationWarning,default::FutureWarning"  # shown, so they can be caught
    env["PYTHONUNBUFFERED"] = "1"   # stdout and stderr interleave in the order written
    return env


def _check(args: list[str], rc: int, out: str) -> str:
    """A command succeeded quietly: exit 0, no traceback, no deprecation warning from our files, no library bars."""
    shown = f"zerotir {' '.join(args)} →\n{out[-3000:]}"
    assert rc == 0, shown
    assert "Traceback" not in out, shown
    assert not OUR_WARNING.search(out), shown
    assert "Loading weights" not in out and "Writing model shards" not in out, shown  # no bars outside a TTY
    return out


def _zerotir(args: list[str], cwd: Path, stdin: str | None = None) -> str:
    """Run the installed `zerotir` command as a user would (stderr is not a TTY), assert it succeeded quietly."""
    exe = Path(sys.executable).with_name("zerotir")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "zerotir.cli"]
    p = subprocess.run(cmd + args, cwd=cwd, env=_env(), input=stdin, capture_output=True, text=True, timeout=600)
    return _check(args, p.returncode, p.stdout + p.stderr)


# Runs `zerotir` commands one after another in ONE interpreter, as the console script would run each (its `app`,
# exit code from SystemExit); an argument with '*' is globbed, as a shell would. Each command's output follows a
# marker line. Sharing the interpreter pays torch + transformers imports once instead of per command (about half
# the walk's time); what it cannot catch, a fresh process's start-up, `_zerotir` covers for the light commands.
_SESSION = r"""
import glob, json, sys, traceback
from zerotir.cli import app
for args in json.loads(sys.argv[1]):
    args = [a for x in args for a in (sorted(glob.glob(x)) if "*" in x else [x])]
    print("\n@@zerotir " + json.dumps(args), flush=True)
    try:
        app(args, prog_name="zerotir")
        rc = 0
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        rc = 1
    print("\n@@rc " + str(rc), flush=True)
"""


def _zerotir_session(commands: list[list[str]], cwd: Path) -> list[str]:
    """Run `commands` in one interpreter (see `_SESSION`); each must succeed quietly. Returns their outputs."""
    p = subprocess.run([sys.executable, "-c", _SESSION, json.dumps(commands)], cwd=cwd, env=_env(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    parts = re.split(r"^@@zerotir .*$", p.stdout, flags=re.M)
    outs = []
    for args, part in zip(commands, parts[1:]):
        m = re.search(r"^@@rc (-?\d+)$", part, flags=re.M)
        assert m, f"zerotir {' '.join(args)}: no exit status →\n{part[-3000:]}"
        outs.append(_check(args, int(m.group(1)), part[:m.start()]))
    assert len(outs) == len(commands) and p.returncode == 0, p.stdout[-3000:]
    return outs


@pytest.mark.integration
def test_readme_commands_run_from_outside_the_checkout(tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    assert ROOT not in cwd.parents
    iso = _isolation()
    _zerotir(["--help"], cwd)
    assert '"stdout": "42\\n"' in _zerotir(["sandbox", "exec", "--isolation", iso], cwd, stdin="print(6*7)")
    toy, doc, paper, _, _, _, analysis = _zerotir_session([
        ["config", "toy"],
        ["config", "--doc"],
        ["config", "paper"],
        ["train", "--config", "toy", *TINY, *LEAN, "--set", f"sandbox.isolation={iso}"],
        ["eval", "--model", "toy", "--benchmarks", "toy:heldout", "--limit", "2", "--samples", "1",
         *LEAN, "--set", f"sandbox.isolation={iso}", "--no-progress"],
        ["rollout", "--model", "toy", "--problems", "toy:heldout", "--limit", "2", "--n", "1", "--show", "1",
         *LEAN, "--set", f"sandbox.isolation={iso}"],
        # the README's `zerotir analyze RUN_DIR`; one metric and no bootstrap keep a 1-step run's report small
        ["analyze", "runs/toy-*", "--metric", "reward/accuracy", "--bootstrap", "0"],
    ], cwd)
    assert "train:" in toy and "wandb_mode" in doc
    assert "../" not in paper and "shared:math500" in paper

    (run,) = (cwd / "runs").glob("toy-*")
    assert len((run / "metrics.jsonl").read_text().splitlines()) >= 1
    assert (cwd / "runs" / "eval" / "results.md").is_file()
    (traj,) = (cwd / "runs").glob("rollout-*/trajectories.jsonl")  # a run-like dir, not the cwd
    rows = [json.loads(line) for line in traj.read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["prompt_text"].startswith("Q:")  # the toy template, as eval uses
    assert "report:" in analysis and (run / "analysis" / "report.md").is_file()   # inside the run by default
    assert sorted(p.name for p in cwd.iterdir()) == ["runs"]  # nothing written next to the user's files


# ------------------------------------------------------------------------------------------------ bad inputs

def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "nonutf8.jsonl").write_bytes(b'{"problem": "What is 1+1?", "answer": "2"}\n'
                                        b'{"problem": "bad \xff\xfe", "answer": "3"}\n')
    (tmp / "empty.jsonl").write_text("")
    (tmp / "badkey.yaml").write_text("train:\n  stepz: 3\n")
    return {
        "missing model dir": (["--set", f"model.path={tmp}/no-such-model"], "model directory not found"),
        "hub id": (["--set", "model.path=Qwen/Qwen2.5-7B"], "huggingface-cli download Qwen/Qwen2.5-7B --local-dir"),
        "bad YAML key": (["--config", str(tmp / "badkey.yaml")], "unknown config key 'train.stepz'"),
        "bad --set key": (["--set", "train.stepz=1"], "unknown config key 'train.stepz'"),
        "bad isolation": (["--set", "sandbox.isolation=bogus"], "unknown isolation level 'bogus'"),
        "unreachable sandbox url": (["--set", "sandbox.backend=remote", "--set", "sandbox.url=http://127.0.0.1:9"],
                                    "127.0.0.1:9"),
        "non-UTF-8 dataset row": (["--set", "data.train=nonutf8.jsonl"], "nonutf8.jsonl:2: not valid UTF-8"),
        "empty dataset": (["--set", "data.train=empty.jsonl"], "empty.jsonl: no rows"),
    }


BAD = ["missing model dir", "hub id", "bad YAML key", "bad --set key", "bad isolation", "unreachable sandbox url",
       "non-UTF-8 dataset row", "empty dataset"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_no_run_dir(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, expected = _bad_inputs(tmp_path)[case]
    if "--config" not in args:
        args = ["--config", "toy", *args]
    res = CliRunner().invoke(app, ["train", *args, *TINY])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], res.output
    assert not (tmp_path / "runs").exists()


RAY_BAD = {"unreachable sandbox url": (["--set", "sandbox.backend=remote", "--set", "sandbox.url=http://127.0.0.1:9"],
                                       "sandbox.url http://127.0.0.1:9 is not healthy"),
           "bad isolation": (["--set", "sandbox.isolation=bogus"], "unknown isolation level 'bogus'")}


@pytest.mark.parametrize("case", sorted(RAY_BAD))
def test_ray_backend_checks_the_sandbox_before_ray_starts(case, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.chdir(tmp_path)
    args, expected = RAY_BAD[case]
    res = CliRunner().invoke(app, ["train", "--config", "toy", "--backend", "ray", *args, *TINY])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], res.output
    assert not (tmp_path / "runs").exists() and not ray.is_initialized()   # failed before Ray (or a model) started


# ------------------------------------------------------------------------------- the pieces behind the walk

def test_shared_source_resolves_in_the_data_dir(tmp_path, monkeypatch):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "train").mkdir()
    (tmp_path / "benchmarks" / "mini.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n')
    (tmp_path / "train" / "t.jsonl").write_text('{"problem": "2+2?", "answer": "4"}\n')
    monkeypatch.setenv("ZEROTIR_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path / "train")  # the current dir plays no part
    assert data_dir() == tmp_path
    assert [p.answer for p in load_problems("shared:mini").problems] == ["2"]
    assert [p.answer for p in load_problems("shared:train/t").problems] == ["4"]
    with pytest.raises(DataError, match=r"shared:nope: .* has no nope.*set ZEROTIR_DATA=DIR"):
        load_problems("shared:nope")
    with pytest.raises(DataError, match="inside the shared data dir"):
        load_problems("shared:../benchmarks/mini")
    monkeypatch.setenv("ZEROTIR_DATA", str(tmp_path / "absent"))
    with pytest.raises(DataError, match="does not exist; set ZEROTIR_DATA"):
        load_problems("shared:mini")


def test_data_dir_follows_the_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("ZEROTIR_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    from zerotir.eval.benchmarks import default_benchmark_dir

    assert default_benchmark_dir() == tmp_path / "benchmarks"   # eval reads the same dir


def test_paper_preset_names_its_data_by_registry():
    d = load_config("paper").data
    assert d.train.startswith("shared:") and d.eval.startswith("shared:")


def test_rollout_and_eval_pick_the_same_preset():
    assert preset_for(None, "toy") == preset_for(None, "toy-3m") == "toy"
    assert preset_for(None, "/models/qwen") is None and preset_for(None, None) is None
    assert preset_for("paper", "toy") == "paper"


def test_wandb_mode_follows_the_user(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password k\n")
    netrc.chmod(0o600)
    none = tmp_path / "no-netrc"
    assert wandb_mode("auto", {}, none) == "offline"
    assert wandb_mode("auto", {}, netrc) == "online"
    assert wandb_mode("auto", {"WANDB_API_KEY": "k"}, none) == "online"
    assert wandb_mode("auto", {"WANDB_MODE": "disabled", "WANDB_API_KEY": "k"}, none) == "disabled"
    assert wandb_mode("offline", {"WANDB_API_KEY": "k"}, netrc) == "offline"
    assert wandb_mode("auto", {"WANDB_BASE_URL": "https://wandb.example.org"}, netrc) == "offline"  # other host
    with pytest.raises(ValueError, match="logging.wandb_mode: 'sometimes'"):
        wandb_mode("sometimes", {})


def test_progress_bars_only_in_a_terminal(monkeypatch):
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    quiet_libraries(tty=True)
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    quiet_libraries(tty=False)
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")  # the user's own choice wins
    quiet_libraries(tty=False)
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"


def _descendants(pid: int) -> list[int]:
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parent[int(d.name)] = ppid
    out, frontier = [], [pid]
    while frontier:
        kids = [c for c, p in parent.items() if p in frontier]
        out += kids
        frontier = kids
    return out


def test_sandbox_worker_command_line_is_short_and_named():
    with Sandbox(workers=1, timeout_s=5.0, isolation=_isolation()) as sb:
        assert sb.run("print(1)").stdout == "1\n"
        deadline, cmdlines = time.monotonic() + 5, []
        while not cmdlines and time.monotonic() < deadline:
            for pid in _descendants(os.getpid()):
                try:
                    cmd = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if "zerotir sandbox zygote" in cmd and not cmd.startswith("bwrap"):
                    cmdlines.append(cmd)
    assert cmdlines, "no sandbox worker found among this process's descendants"
    assert all(len(c) < 300 and "def main" not in c for c in cmdlines), cmdlines
