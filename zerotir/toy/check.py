"""Is there an RL signal in a toy base? Sample it on held-out problems through the project's own eval path.

    stats = check_base("toy-0.2m", n=256, temperature=1.0)
    # {'n': 256, 'code_ratio': 0.05, 'accuracy': 0.12, 'code_attempt_accuracy': 0.5, 'text_accuracy': 0.1, ...}

`zerotir toy check-base` and `zerotir toy build-base --check` run this. It is `zerotir.eval.core.evaluate` with the
toy preset's rollout, the real sandbox and the training reward (the same code as periodic eval), one sample per
problem. RL can only reinforce what the base already does sometimes: it needs some code use (code_ratio) and code
that is often right (code_attempt_accuracy); `BASE_TARGET` is the range the shipped base was tuned into. Per
problem kind (`kind_stats`), because RL follows reward kind by kind: a kind whose code attempts are never right
stays answered in text after RL (docs/scaling.md, item 7).
"""

from __future__ import annotations

from typing import Any, Sequence

from zerotir.types import Trajectory

BASE_TARGET = {"code_ratio": (0.02, 0.08), "code_attempt_accuracy": (0.3, 1.0)}
"""metric → (low, high): where a base gives RL a signal without already solving the task with code."""


def signal_stats(trajs: Sequence[Trajectory]) -> dict[str, float]:
    """Pure: n, code_ratio (share with an executed tool call), accuracy, code_attempt_accuracy (accuracy among
    responses that ran code), text_accuracy (among those that did not), code_responses, mean_response_tokens."""
    n = len(trajs)
    code = [t for t in trajs if t.num_tool_calls > 0]
    text = [t for t in trajs if t.num_tool_calls == 0]
    return {"n": n, "code_ratio": len(code) / max(n, 1),
            "accuracy": sum(bool(t.correct) for t in trajs) / max(n, 1),
            "code_attempt_accuracy": sum(bool(t.correct) for t in code) / max(len(code), 1),
            "text_accuracy": sum(bool(t.correct) for t in text) / max(len(text), 1),
            "code_responses": len(code),
            "mean_response_tokens": sum(len(t.response_ids) for t in trajs) / max(n, 1)}


def kind_stats(trajs: Sequence[Trajectory], kinds: dict[str, str]) -> dict[str, dict[str, int]]:
    """Pure: per problem kind (`kinds`: problem id → kind; ids not in it count as '?'), in order of frequency:
    {kind: {n, code_responses, code_correct}} (responses, those that ran code, those of them verified right)."""
    out: dict[str, dict[str, int]] = {}
    for t in trajs:
        k = out.setdefault(kinds.get(t.problem_id, "?"), {"n": 0, "code_responses": 0, "code_correct": 0})
        k["n"] += 1
        if t.num_tool_calls > 0:
            k["code_responses"] += 1
            k["code_correct"] += bool(t.correct)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["n"]))


def in_target(stats: dict[str, float]) -> bool:
    return all(lo <= stats[k] <= hi for k, (lo, hi) in BASE_TARGET.items())


def check_base(model: str, n: int = 256, temperature: float = 1.0, seed: int = 0,
               overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Sample `model` (a directory or a toy name) once on each of the first `n` held-out problems at `temperature`,
    with the toy preset's tool budget and token limits. Returns `signal_stats` and, under "by_kind", `kind_stats`."""
    from zerotir.config import load_config
    from zerotir.data import load_problems
    from zerotir.toy.demo import evaluate_model

    cfg = load_config("toy", [f"eval.temperature={temperature}", "eval.samples=1", "eval.top_p=1.0",
                              f"train.seed={seed}", *overrides])
    problems = load_problems(cfg.data.eval, limit=n, seed=seed).problems
    report = evaluate_model(model, cfg, problems, seed=seed)
    kinds = {p.id: str(p.meta.get("kind", "?")) for p in problems}
    return {**signal_stats(report.trajectories), "by_kind": kind_stats(report.trajectories, kinds)}
