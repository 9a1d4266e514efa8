"""The terminal's live view (issue 18): it fits the terminal (no 'rewa…' at 80 columns), shows progress within a
step, and keeps warnings and log records above itself instead of printing through it."""

from __future__ import annotations

import io
import logging
import re
import sys
import warnings

from rich.console import Console

from zerotir.telemetry import LiveView, Progress, pack_columns, table_width
from zerotir.train.sinks import LIVE_COLUMNS

ROW = {"step": 12, "reward/mean": 0.53125, "reward/accuracy": 0.5, "rollout/code_ratio": 0.97,
       "rollout/response_tokens": 123.4, "rollout/tool_error_rate": 0.25, "loss/total": -0.01234,
       "loss/approx_kl_behaviour": 0.00012, "perf/step_seconds": 12.3, "eval/accuracy": 0.25}
NAMES = [name for name, _, _ in LIVE_COLUMNS]


def test_table_width_and_packing_hand_checked():
    # "┃ step ┃ reward ┃": 1 + (1+4+1) + 1 + (1+6+1) + 1 = 17
    assert table_width([4, 6]) == 17
    # [0,1] = 17; + col 2 (3 wide) = 23 <= 24; + col 3 (4 wide) = 30 > 24 → a second group, led by the step column
    assert pack_columns([4, 6, 3, 4], 24) == [[0, 1, 2], [0, 3]]
    assert pack_columns([4, 6, 3, 4], 30) == [[0, 1, 2, 3]]
    assert pack_columns([4, 40, 3], 20) == [[0, 1], [0, 2]]   # too wide alone: its own group (rich cuts it)


def _render(width: int, progress: Progress | None = None) -> list[str]:
    console = Console(record=True, width=width, file=io.StringIO(), force_terminal=True, color_system=None)
    view = LiveView(LIVE_COLUMNS, progress=progress, console=console)
    view.add_row(ROW)
    view.add_row(dict(ROW, step=13))
    console.print(view)
    return console.export_text().splitlines()


def _headers(lines: list[str]) -> list[list[str]]:
    return [[c.strip() for c in ln.strip("┃").split("┃")] for ln in lines if ln.startswith("┃")]


def test_live_view_fits_160_columns_in_one_table():
    lines = _render(160)
    assert max(len(ln) for ln in lines) <= 160 and "…" not in "".join(lines)
    assert _headers(lines) == [NAMES]
    assert sum("-0.0123" in ln for ln in lines) == 2      # both rows, every value whole


def test_live_view_wraps_into_two_tables_at_80_columns_without_cutting_names():
    lines = _render(80)
    assert max(len(ln) for ln in lines) <= 80 and "…" not in "".join(lines)
    heads = _headers(lines)
    assert len(heads) == 2 and all(h[0] == "step" for h in heads)     # the step column leads each part
    assert heads[0][1:] + heads[1][1:] == NAMES[1:]                     # every name, whole, in order
    assert sum(bool(re.match(r"│ +12 │", ln)) for ln in lines) == 2     # step 12's row appears in both parts


def test_progress_within_a_step_is_shown_under_the_table():
    p = Progress()
    p.begin("rollout", 32)
    p.advance("rollout", 12)
    text = "\n".join(_render(100, p))
    assert "step 14 rollout 12/32 trajectories" in text
    p.end("rollout")
    p.begin("update", 8)
    p.advance("update")
    text = "\n".join(_render(100, p))
    assert "update 1/8 minibatches" in text and "rollout" not in text
    assert p.snapshot() == {"update": (1, 8)}


def _screen(raw: str) -> list[str]:
    """What a terminal shows after `raw`: enough of a VT100 for rich's Live (text, \\n, \\r, erase line, cursor up)."""
    lines, row = [""], 0
    for tok in re.findall(r"\x1b\[\?25[lh]|\x1b\[2K|\x1b\[1A|\r|\n|[^\x1b\r\n]+", raw):
        if tok == "\n":
            row += 1
            if row == len(lines):
                lines.append("")
        elif tok == "\x1b[2K":
            lines[row] = ""
        elif tok == "\x1b[1A":
            row = max(0, row - 1)
        elif tok == "\r" or tok.startswith("\x1b[?25"):
            continue
        else:
            lines[row] += tok
    return [ln for ln in lines if ln.strip()]


def test_warnings_and_log_records_land_above_the_live_view():
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=True, color_system=None)
    logger = logging.getLogger("zerotir.test_live_view")
    handler = logging.StreamHandler(sys.stderr)   # made before the view starts: holds the terminal stream
    logger.addHandler(handler)
    show = warnings.showwarning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            with LiveView(LIVE_COLUMNS, console=console) as view:
                view.add_row(ROW)
                warnings.warn("careful now", UserWarning, stacklevel=1)
                logger.warning("a log record")
                view.add_row(dict(ROW, step=13))
    finally:
        logger.removeHandler(handler)
    screen = _screen(out.getvalue())
    warn = next(i for i, ln in enumerate(screen) if "UserWarning: careful now" in ln)
    rec = next(i for i, ln in enumerate(screen) if ln == "a log record")
    top = next(i for i, ln in enumerate(screen) if ln.startswith("┏"))
    assert warn < rec < top                                       # both above the table, in order
    assert sum(ln.startswith("┏") for ln in screen) == 1           # one table on screen, not torn
    assert [ln for ln in screen if ln.startswith("│")][-1].startswith("│   13 │")
    assert handler.stream is sys.stderr and warnings.showwarning is show   # restored when the view closes
