"""`zerotir demo`: RL with the sandbox on the toy base, then a report showing tool use emerge.

    run = run_demo(demo_config(seed=0))                 # what `make demo` runs
    run = run_demo(demo_config(seed=0, no_tools=True))  # ZeroRL baseline: same budget, code is never run
    run_grid(demo_config(), "runs/toy-grid")            # train budgets x eval budgets (0, 1, 2, 4)

Everything goes through the project's own parts: `zerotir.train.loop.train` (rollout, sandbox, reward, algos,
learner, periodic eval) and `zerotir.eval.core.evaluate`. The loop evaluates the untouched base model before
training (`train.eval_at_start`, the step-0 row of metrics.jsonl), so the report's "start" column is the model
before any RL. The report (report.md, summary.json, plots/*.png, the analysis report when zerotir.analysis is
available) lands in the run directory.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from zerotir.config import Config, load_config
from zerotir.telemetry import get_logger, read_metrics

log = get_logger("toy")

TABLE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("accuracy", "eval/accuracy", "{:.3f}"),
    ("code ratio", "eval/code_ratio", "{:.3f}"),
    ("calls per response", "eval/tool_calls_per_response", "{:.2f}"),
    ("response length (tokens)", "eval/response_tokens", "{:.1f}"),
)
"""The start-vs-end table: (label, metric, format)."""

PANELS: tuple[tuple[str, str, str], ...] = (
    ("accuracy", "reward/accuracy", "eval/accuracy"),
    ("code ratio", "rollout/code_ratio", "eval/code_ratio"),
    ("tool calls per response", "rollout/tool_calls_per_response", "eval/tool_calls_per_response"),
    ("response length (sampled tokens)", "rollout/response_tokens", "eval/response_tokens"),
)
"""Plot panels: (title, training-batch metric, held-out eval metric)."""

OOD_SPLITS: tuple[str, ...] = ("toy:ood-wording", "toy:ood-size")
"""Problems outside the training distribution (zerotir.toy.tasks): phrasings never seen, operands larger than any
training problem. The final policy is evaluated on them too, so the report says whether RL taught the tool or one
template (same problem kinds; only the wording or the operand size differs from the held-out set)."""


DEMO_CURRICULUM: tuple[str, ...] = ("model.path=toy-0.8m-diverse", "data.train=toy:train-diverse")
"""The demo's base and RL set: the diverse curriculum (its questions asked 140 ways, zerotir.toy.tasks), shipped. In
the curriculum study (configs/studies/curriculum.yaml, 3 seeds, the demo's budget) it was the only one to answer
unseen phrasings (greedy, 256 problems: 0.65 vs 0.01 for the standard 'toy' base and RL set) at no cost in
distribution (0.73 vs 0.71); docs/scaling.md. `--set model.path=toy --set data.train=toy:train` runs the standard."""


DEMO_BUDGET: tuple[str, ...] = ("train.steps=30", "train.eval_every=6")
"""The demo's RL budget: as many steps as fit in 5 minutes of RL on 2 cores, with 6 evals (steps 0, 6, ..., 30).
The toy preset's lean sandbox workers (sandbox.preimport) made a step ~20% faster; 30 steps took 254-293 s here,
where 25 took 273 s before. 35 steps (320-340 s) would be over the budget (docs/scaling.md)."""


def demo_config(*, seed: int = 0, steps: int | None = None, algo: str | None = None, no_tools: bool = False,
                overrides: Sequence[str] = ()) -> Config:
    """The 'toy' preset with the demo's curriculum (DEMO_CURRICULUM), budget (DEMO_BUDGET) and options applied.
    `no_tools` sets the train and eval tool budgets to 0 (code blocks are answered with the budget message and never
    run): the ZeroRL baseline at the same budget. `overrides` come last and win."""
    extra = [*DEMO_CURRICULUM, *DEMO_BUDGET, f"train.seed={seed}",
             f"train.name=demo-{'notools' if no_tools else 'tools'}-s{seed}"]
    if steps is not None:
        extra.append(f"train.steps={steps}")
    if algo:
        extra.append(f"algo.name={algo}")
    if no_tools:
        extra += ["rollout.max_tool_calls=0", "eval.max_tool_calls=0"]
    return load_config("toy", extra + list(overrides))


# ------------------------------------------------------------------------------------------------- eval


def eval_policy(model_path: str | Path, cfg: Config, max_tool_calls: int | None = None,
                seed: int | None = None) -> dict[str, float]:
    """Held-out eval of one model directory with the project's evaluate(): an 'eval/…' metric row."""
    from zerotir.data import load_problems

    problems = load_problems(cfg.data.eval, limit=cfg.data.eval_limit, seed=cfg.train.seed).problems
    t0 = time.perf_counter()
    report = evaluate_model(model_path, cfg, problems, max_tool_calls=max_tool_calls, seed=seed)
    return {**report.metric_row("eval/"), "perf/eval_seconds": time.perf_counter() - t0}


def evaluate_model(model_path: str | Path, cfg: Config, problems: list, *, max_tool_calls: int | None = None,
                   seed: int | None = None):
    """`zerotir.eval.core.evaluate` on one model directory with a real sandbox and the training reward, at the
    eval settings of `cfg` (samples, temperature, tool budget unless `max_tool_calls` is given). → EvalReport."""
    return evaluate_sets(model_path, cfg, {"": problems}, max_tool_calls=max_tool_calls, seed=seed)[""]


def evaluate_sets(model_path: str | Path, cfg: Config, sets: dict[str, list], *, max_tool_calls: int | None = None,
                  seed: int | None = None) -> dict:
    """evaluate_model over several problem sets with one model load, sandbox and scorer → {name: EvalReport}."""
    from zerotir.eval.core import eval_rollout_config, evaluate
    from zerotir.reward import RewardScorer
    from zerotir.rollout.engines import make_engine
    from zerotir.sandbox import make_sandbox

    budget = cfg.eval.max_tool_calls if max_tool_calls is None else max_tool_calls
    seed = cfg.train.seed if seed is None else seed
    engine = make_engine(cfg, model_path=model_path, seed=seed)
    with make_sandbox(cfg.sandbox) as sandbox, RewardScorer(cfg.reward) as scorer:
        rcfg = replace(eval_rollout_config(cfg.rollout, cfg.eval), max_tool_calls=budget)
        return {name: evaluate(problems, engine, sandbox, scorer, rollout_cfg=rcfg, samples=cfg.eval.samples,
                               max_tool_calls=budget, seed=seed) for name, problems in sets.items()}


# ----------------------------------------------------------------------------------------------- running


def eval_generalization(run: Path, cfg: Config) -> dict[str, dict]:
    """The run's final policy on its held-out set (`data.eval`) and on each of OOD_SPLITS (the first
    `data.eval_limit` problems each, eval settings of `cfg`), with why answers were wrong (eval.metrics failure
    kinds); written to RUN/generalization.json → {split: {eval/… metric row, "eval/problems", "failures"}}, the
    held-out set first."""
    from zerotir.data import load_problems
    from zerotir.train.checkpoint import latest_checkpoint

    names = [cfg.data.eval] + [s for s in OOD_SPLITS if s != cfg.data.eval]
    sets = {src: load_problems(src, limit=cfg.data.eval_limit, seed=cfg.train.seed).problems for src in names}
    ckpt = latest_checkpoint(run)
    # the loop's eval seed at that step (train.phases.heldout_eval): the held-out row samples what the run's last
    # eval row sampled, so the report does not show two different held-out figures for one policy
    step = json.loads((ckpt / "state.json").read_text())["step"]
    reports = evaluate_sets(ckpt / "policy", cfg, sets, seed=cfg.train.seed + step)
    out = {src: {**reports[src].metric_row("eval/"), "eval/problems": len(sets[src]),
                 "failures": reports[src].failures} for src in names}
    (run / "generalization.json").write_text(json.dumps(out, indent=1))
    return out


def run_demo(cfg: Config, run_dir: str | Path | None = None, *, base_eval: bool = True,
             analysis: bool = True, generalization: bool = True) -> Path:
    """RL-train per `cfg` with the project's loop (its step-0 row is the base model's eval unless `base_eval` is
    False), evaluate the final policy beyond the training distribution (`generalization`, toy eval sets only),
    write the report; returns the run directory."""
    from zerotir.train.loop import train

    t0 = time.perf_counter()
    cfg = replace(cfg, train=replace(cfg.train, eval_at_start=base_eval and cfg.train.eval_at_start))
    if run_dir is None:
        run_dir = Path("runs") / f"{cfg.train.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = Path(train(cfg, run_dir=str(run_dir)))
    wall = time.perf_counter() - t0  # RL (with its periodic evals); the generalization eval comes after
    if generalization and cfg.data.eval.startswith("toy:"):
        eval_generalization(run, cfg)
    write_report(run, wall_seconds=wall)
    if analysis:
        run_analysis([run], run / "analysis")
    return run


def run_analysis(run_dirs: list[Path], out_dir: Path) -> Path | None:
    """The scaling analysis report, when zerotir.analysis is installed and can handle these runs."""
    try:
        from zerotir.analysis.report import analyze
    except ImportError:
        log.info("zerotir.analysis not available; skipping the analysis report")
        return None
    try:
        return Path(analyze([str(r) for r in run_dirs], str(out_dir)))
    except Exception as e:  # the demo's own report is already written; a failed extra must not hide it
        log.warning("analysis report failed: %s: %s", type(e).__name__, e)
        return None


# ------------------------------------------------------------------------------------------------ report


def eval_rows(rows: list[dict]) -> list[dict]:
    """The rows that carry a held-out eval, in step order."""
    return sorted((r for r in rows if "eval/accuracy" in r), key=lambda r: r["step"])


def start_end(rows: list[dict]) -> dict[str, dict[str, float]]:
    """{'start': first eval row's table metrics, 'end': last eval row's} (+ their steps)."""
    ev = eval_rows(rows)
    if not ev:
        raise ValueError("no held-out eval rows in metrics.jsonl")
    pick = lambda r: {"step": r["step"], **{m: float(r.get(m, float("nan"))) for _, m, _ in TABLE_ROWS}}
    return {"start": pick(ev[0]), "end": pick(ev[-1])}


def table_markdown(se: dict[str, dict[str, float]]) -> str:
    s, e = se["start"], se["end"]
    lines = [f"| held-out | start (step {s['step']}) | end (step {e['step']}) |", "|---|---|---|"]
    for label, m, fmt in TABLE_ROWS:
        lines.append(f"| {label} | {fmt.format(s[m])} | {fmt.format(e[m])} |")
    return "\n".join(lines)


def plot_curves(rows: list[dict], path: Path, title: str = "") -> Path:
    """2x2 panels vs step: training-batch metric (line) and held-out eval (markers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (name, train_m, eval_m) in zip(axes.flat, PANELS):
        tr = [(r["step"], r[train_m]) for r in rows if train_m in r and r["step"] > 0]
        ev = [(r["step"], r[eval_m]) for r in eval_rows(rows) if eval_m in r]
        if tr:
            ax.plot(*zip(*tr), label="training batch", color="tab:blue", alpha=0.8)
        if ev:
            ax.plot(*zip(*ev), "o--", label="held-out eval", color="tab:red")
        ax.set_title(name)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pick_transcripts(run_dir: Path, n: int = 3) -> tuple[list[Any], list[Any]]:
    """(correct responses that ran code from the last transcript file, a few responses from the first one)."""
    from zerotir.types import read_trajectories

    files = sorted((run_dir / "transcripts").glob("step_*.jsonl"))
    if not files:
        return [], []
    last = read_trajectories(files[-1])
    good, seen = [], set()
    for t in sorted(last, key=lambda t: (not t.correct, -t.num_tool_calls)):
        if t.correct and t.num_tool_calls > 0 and t.problem_id not in seen:
            good.append(t)
            seen.add(t.problem_id)
        if len(good) == n:
            break
    first = read_trajectories(files[0])[:2] if len(files) > 1 else []
    return good, first


def generalization_markdown(end: dict[str, float], gen: dict[str, dict]) -> str:
    """Final policy: the in-distribution held-out set next to each OOD split, then why answers were wrong where the
    splits carry failure kinds. The held-out row is gen's non-OOD entry, or else the run's last eval row `end`."""
    from zerotir.eval.metrics import FAILURE_KINDS

    held = [name for name in gen if name not in OOD_SPLITS]
    rows = ([(f"{held[0]} (training distribution)", gen[held[0]])] if held
            else [("held-out (training distribution)", end)]) + [(n, gen[n]) for n in gen if n in OOD_SPLITS]
    lines = ["| problems | accuracy | code ratio | tool errors (share of executed code) |", "|---|---:|---:|---:|"]
    for name, r in rows:
        cells = [f"{r.get(m, float('nan')):.3f}" for m in ("eval/accuracy", "eval/code_ratio", "eval/tool_error_rate")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    failed = [(name, r["failures"]) for name, r in rows if r.get("failures")]
    if failed:
        lines += ["", "Why answers were wrong (share of responses; `zerotir.eval.metrics`): the last call failed; no "
                  "final answer; wrong without running code; the answer is not what the code printed (a copying "
                  "slip); the code printed a wrong result (wrong operands or operation).", "",
                  "| problems | " + " | ".join(FAILURE_KINDS) + " |", "|---|" + "---:|" * len(FAILURE_KINDS)]
        lines += [f"| {name} | " + " | ".join(f"{f.get(k, 0.0):.3f}" for k in FAILURE_KINDS) + " |"
                  for name, f in failed]
    return "\n".join(lines)


def _fence(t: Any, step_label: str) -> str:
    head = f"{step_label} — gold {t.gold_answer}, answer {t.answer}, correct={t.correct}, tool calls={t.num_tool_calls}"
    return f"{head}\n\n````text\n{t.prompt_text}{t.response_text}\n````"


def write_report(run_dir: str | Path, wall_seconds: float | None = None) -> Path:
    """report.md + summary.json + plots/curves.png from the run's metrics.jsonl and transcripts."""
    run = Path(run_dir)
    rows = read_metrics(run / "metrics.jsonl")
    se = start_end(rows)
    plot = plot_curves(rows, run / "plots" / "curves.png", title=run.name)
    cfg_text = (run / "config.yaml").read_text() if (run / "config.yaml").exists() else ""
    good, first = pick_transcripts(run)
    s, e = se["start"], se["end"]
    acc_gain = (e["eval/accuracy"] / s["eval/accuracy"]) if s["eval/accuracy"] > 0 else float("inf")
    summary = {"run_dir": str(run), "start": s, "end": e,
               "accuracy_ratio": acc_gain if math.isfinite(acc_gain) else None,
               "accuracy_gain_points": 100 * (e["eval/accuracy"] - s["eval/accuracy"]),
               "wall_seconds": wall_seconds, "steps": max(r["step"] for r in rows)}
    gen_path = run / "generalization.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    if gen:
        last = eval_rows(rows)[-1]
        summary["generalization"] = {name: r.get("eval/accuracy") for name, r in gen.items()}
    (run / "summary.json").write_text(json.dumps(summary, indent=1))
    parts = [f"# Toy world run: {run.name}", "",
             "A tiny model pretrained from scratch (text solutions, framed code snippets, and rarely the "
             "two together) is RL-trained with the sandbox; reward is 1 for a verified-correct boxed answer.", "",
             table_markdown(se), "",
             (f"Accuracy x{acc_gain:.1f}" if math.isfinite(acc_gain) else "Accuracy from 0")
             + f" ({summary['accuracy_gain_points']:+.1f} points)"
             + (f"; wall time {wall_seconds:.0f} s." if wall_seconds else "."), "",
             "![curves](plots/curves.png)", ""]
    if gen:
        parts += ["## Beyond the training distribution (final policy)", "",
                  "Same problem kinds; `ood-wording` asks them in phrasings never seen in training or pretraining, "
                  "`ood-size` with larger operands than any training problem. Code use that holds up here is a "
                  "learned skill; code use with accuracy near 0 is a copied template.", "",
                  generalization_markdown(last, gen), ""]
    if good:
        parts += ["## Learned tool use (last logged step, correct answers)", ""]
        parts += [_fence(t, f"**{t.problem_id}**") + "\n" for t in good]
    if first:
        parts += ["## For contrast: the first step", ""] + [_fence(t, f"**{t.problem_id}**") + "\n" for t in first]
    if cfg_text:
        parts += ["## Configuration", "", "```yaml", cfg_text.rstrip(), "```"]
    path = run / "report.md"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    log.info("report: %s (plot %s)", path, plot)
    return path


# -------------------------------------------------------------------------------------------------- grid


GRID_BUDGETS = (0, 1, 2, 4)


def run_grid(cfg: Config, out_dir: str | Path, budgets: Sequence[int] = GRID_BUDGETS,
             on_run: Callable[[int, Path], None] | None = None) -> Path:
    """The paper's 'Env. Iter.' table in miniature: one RL run per train tool budget, each final policy evaluated
    at every eval tool budget. Writes grid.json and grid.md into `out_dir`."""
    from zerotir.train.checkpoint import latest_checkpoint

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for b in budgets:
        c = replace(cfg, rollout=replace(cfg.rollout, max_tool_calls=b), eval=replace(cfg.eval, max_tool_calls=b),
                    train=replace(cfg.train, name=f"grid-train{b}"))
        run = run_demo(c, out / f"train-budget-{b}", base_eval=False, analysis=False, generalization=False)
        if on_run:
            on_run(b, run)
        policy = latest_checkpoint(run) / "policy"
        results[str(b)] = {str(eb): eval_policy(policy, c, max_tool_calls=eb) for eb in budgets}
        (out / "grid.json").write_text(json.dumps(results, indent=1))
    lines = ["Held-out accuracy (code ratio) of the final policy; rows: train tool budget, columns: eval budget.", "",
             "| train \\ eval | " + " | ".join(map(str, budgets)) + " |", "|---" * (len(budgets) + 1) + "|"]
    for b in budgets:
        cells = [f"{results[str(b)][str(eb)]['eval/accuracy']:.3f} ({results[str(b)][str(eb)]['eval/code_ratio']:.2f})"
                 for eb in budgets]
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    (out / "grid.md").write_text("\n".join(lines) + "\n")
    return out
