"""Where a step's metrics go besides metrics.jsonl: a rich live table (terminal only), TensorBoard and W&B (in the
user's own mode: online when logged in, else offline; `logging.wandb_mode` forces one), each only when enabled and
installed; plus sample transcripts."""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlparse

from zerotir.telemetry import LiveView, Progress, get_logger
from zerotir.types import Trajectory, write_jsonl

log = get_logger("train")

LIVE_COLUMNS = [("step", "step", "{:.0f}"), ("reward", "reward/mean", "{:.3f}"), ("acc", "reward/accuracy", "{:.3f}"),
                ("code", "rollout/code_ratio", "{:.2f}"), ("len", "rollout/response_tokens", "{:.1f}"),
                ("tool err", "rollout/tool_error_rate", "{:.2f}"), ("loss", "loss/total", "{:+.4f}"),
                ("kl_b", "loss/approx_kl_behaviour", "{:+.4f}"), ("s/step", "perf/step_seconds", "{:.1f}"),
                ("eval acc", "eval/accuracy", "{:.3f}")]


WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_logged_in(env: Mapping[str, str], netrc_path: str | Path | None = None) -> bool:
    """True when W&B has credentials: WANDB_API_KEY, or a ~/.netrc ($NETRC) entry for its API host (what `wandb
    login` writes; the host is WANDB_BASE_URL's, api.wandb.ai by default). An unreadable netrc counts as none."""
    if env.get("WANDB_API_KEY"):
        return True
    host = urlparse(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = netrc_path or env.get("NETRC") or Path(env.get("HOME") or Path.home()) / ".netrc"
    try:
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(setting: str, env: Mapping[str, str], netrc_path: str | Path | None = None) -> str:
    """The W&B mode for `logging.wandb_mode`: a forced mode as given; 'auto' follows the user's WANDB_MODE if set,
    else 'online' when logged in (`wandb_logged_in`), else 'offline' (nothing leaves the machine)."""
    if setting not in WANDB_MODES:
        raise ValueError(f"logging.wandb_mode: '{setting}' is not one of {', '.join(WANDB_MODES)}")
    if setting != "auto":
        return setting
    user = env.get("WANDB_MODE", "")
    if user in ("online", "offline", "disabled"):
        return user
    return "online" if wandb_logged_in(env, netrc_path) else "offline"


class Sinks:
    """Fan-out of metric rows. Use as a context manager so the live view and writers close cleanly."""

    def __init__(self, run_dir: Path, logging_cfg: Any, config_dict: dict | None = None,
                 progress: Progress | None = None):
        self.rows: list[dict] = []
        self.live: LiveView | None = None
        self.tb = None
        self.wandb = None
        if logging_cfg.live and sys.stdout.isatty():   # progress: shown under the table (the backend's phases)
            self.live = LiveView(LIVE_COLUMNS, progress=progress)
        if logging_cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                log.warning("logging.tensorboard is on but tensorboard is not installed; skipping that sink")
        mode = wandb_mode(logging_cfg.wandb_mode, os.environ) if logging_cfg.wandb else "disabled"
        if mode != "disabled":
            try:
                import wandb

                self.wandb = wandb.init(project=logging_cfg.wandb_project, dir=str(run_dir), config=config_dict,
                                        mode=mode, name=run_dir.name)
                log.info("W&B: %s mode (logging.wandb_mode=%s)", mode, logging_cfg.wandb_mode)
            except ImportError:
                log.warning("logging.wandb is on but wandb is not installed; skipping that sink")

    def __enter__(self) -> "Sinks":
        if self.live is not None:
            self.live.__enter__()
        return self

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        step = int(row["step"])
        if self.live is not None:
            self.live.add_row(row)
        else:
            log.info("step %d  " + "  ".join(f"{n}={fmt.format(row[k])}" for n, k, fmt in LIVE_COLUMNS[1:] if k in row),
                     step)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if k != "step"}, step=step)

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def write_transcripts(run_dir: Path, step: int, trajs: Sequence[Trajectory], n_readable: int = 4) -> Path:
    """All of a step's trajectories as JSONL, and the first few as readable text with tool segments marked."""
    out = run_dir / "transcripts"
    out.mkdir(exist_ok=True)
    write_jsonl(out / f"step_{step:06d}.jsonl", trajs)
    parts = []
    for t in list(trajs)[:n_readable]:
        head = (f"=== problem {t.problem_id} sample {t.sample_index}  reward={t.reward}  correct={t.correct}  "
                f"answer={t.answer!r}  gold={t.gold_answer!r}  tool calls={t.num_tool_calls}  finish={t.finish_reason}")
        calls = "".join(f"\n--- call {i}: {c.status}{'' if c.executed else ' (not run)'}" for i, c in enumerate(t.tool_calls))
        parts.append(f"{head}\n{t.prompt_text}{t.response_text}{calls}\n")
    path = out / f"step_{step:06d}.txt"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
