"""Where a step's metrics go besides metrics.jsonl: a rich live table (terminal only), TensorBoard and W&B (offline),
each only when enabled and installed; plus sample transcripts."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Sequence

from zerotir.telemetry import get_logger
from zerotir.types import Trajectory, write_jsonl

log = get_logger("train")

LIVE_COLUMNS = [("step", "step", "{:.0f}"), ("reward", "reward/mean", "{:.3f}"), ("acc", "reward/accuracy", "{:.3f}"),
                ("code", "rollout/code_ratio", "{:.2f}"), ("len", "rollout/response_tokens", "{:.1f}"),
                ("tool err", "rollout/tool_error_rate", "{:.2f}"), ("loss", "loss/total", "{:+.4f}"),
                ("kl_b", "loss/approx_kl_behaviour", "{:+.4f}"), ("s/step", "perf/step_seconds", "{:.1f}"),
                ("eval acc", "eval/accuracy", "{:.3f}")]


class Sinks:
    """Fan-out of metric rows. Use as a context manager so the live view and writers close cleanly."""

    def __init__(self, run_dir: Path, logging_cfg: Any, config_dict: dict | None = None):
        self.rows: list[dict] = []
        self.live = None
        self.tb = None
        self.wandb = None
        if logging_cfg.live and sys.stdout.isatty():
            from rich.live import Live

            self.live = Live(self._table(), refresh_per_second=2, transient=False)
        if logging_cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                log.warning("logging.tensorboard is on but tensorboard is not installed; skipping that sink")
        if logging_cfg.wandb:
            try:
                import wandb

                os.environ.setdefault("WANDB_MODE", "offline")
                self.wandb = wandb.init(project=logging_cfg.wandb_project, dir=str(run_dir), config=config_dict,
                                        mode="offline", name=run_dir.name)
            except ImportError:
                log.warning("logging.wandb is on but wandb is not installed; skipping that sink")

    def _table(self):
        from rich.table import Table

        t = Table(title="zerotir train", expand=False)
        for name, _, _ in LIVE_COLUMNS:
            t.add_column(name, justify="right")
        for r in self.rows[-20:]:
            t.add_row(*[(fmt.format(r[k]) if k in r else "") for _, k, fmt in LIVE_COLUMNS])
        return t

    def __enter__(self) -> "Sinks":
        if self.live is not None:
            self.live.__enter__()
        return self

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        step = int(row["step"])
        if self.live is not None:
            self.live.update(self._table())
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
