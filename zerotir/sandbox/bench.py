"""Sandbox benchmark: the warm isolated pool vs. a fresh interpreter per call, side by side in one run.

For each snippet (trivial, sympy) and each concurrency c (default 1, 4, 16, 64): c callers issue calls back to back;
per-call latency (p50/p90/p99, from the call's start to its result, so queueing behind busy workers counts) and
executions/s (calls / wall time of the cell). The same cells run against `python -c` in a fresh process per call
(what a naive executor does). Every output is checked against the expected text (`wrong` counts mismatches).

`run_rollout_bench` times a rollout step's pattern instead: N trajectories each open a session, run one snippet and
close it, all at once; with the default warm stack (`SANDBOX_PREIMPORT`) and with lean workers (`preimport=[]`, the
toy preset's) side by side, in alternating repetitions so that drift in the machine's load hits both.

On a shared machine the figures include the neighbours' load: the header prints the load average to say so.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time

SNIPPETS = {
    "trivial": "print(1+1)",
    "sympy": "import sympy; print(sympy.factorint(2**64-1))",
}
EXPECTED = {"trivial": "2\n", "sympy": "{3: 1, 5: 1, 17: 1, 257: 1, 641: 1, 65537: 1, 6700417: 1}\n"}
CONCURRENCIES = (1, 4, 16, 64)


def percentile(xs: list[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default; q=0.5 is the median)."""
    if not xs:
        raise ValueError("percentile of an empty list")
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(latencies_s: list[float], wall_s: float, wrong: int) -> dict:
    """One cell's figures: latency percentiles in ms, executions per second over the cell's wall time."""
    return {"n": len(latencies_s), "p50_ms": 1e3 * percentile(latencies_s, 0.5),
            "p90_ms": 1e3 * percentile(latencies_s, 0.9), "p99_ms": 1e3 * percentile(latencies_s, 0.99),
            "exec_per_s": len(latencies_s) / wall_s, "wrong": wrong}


async def _cell(call, expected: str, n: int, c: int) -> dict:
    """`n` calls from `c` concurrent callers; each call returns its stdout."""
    sem, lat, wrong = asyncio.Semaphore(c), [], [0]

    async def one():
        async with sem:
            t0 = time.perf_counter()
            out = await call()
            lat.append(time.perf_counter() - t0)
            wrong[0] += out != expected

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return summarize(lat, time.perf_counter() - t0, wrong[0])


async def _fresh(code: str) -> str:
    """The baseline: one new interpreter per call."""
    p = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.DEVNULL)
    out, _ = await p.communicate()
    return out.decode()


def run_bench(workers: int = 2, n_latency: int = 100, n_baseline: int = 8, isolation: str = "full", log=print, concurrencies: tuple[int, ...] = CONCURRENCIES,
              snippets: tuple[str, ...] = tuple(SNIPPETS)) -> dict:
    """Measure, print a markdown table, and return {snippet: {"by_concurrency": {c: {"sandbox": cell, "fresh": cell}},
    p50_ms, p99_ms, exec_per_s, baseline_p50_ms, speedup_p50, wrong_outputs}} (the flat keys are the c=1 latency
    and the best throughput, for bench/sandbox.py).

    n_latency: sandbox calls per cell (at least 4 x c); n_baseline: fresh-interpreter calls per cell (at least c).
    snippets: names from SNIPPETS to measure.
    """
    from zerotir.sandbox import Sandbox

    load = os.getloadavg()[0]
    unknown = set(snippets) - set(SNIPPETS)
    if unknown:
        raise ValueError(f"unknown snippets {sorted(unknown)}; known: {sorted(SNIPPETS)}")
    out: dict = {"workers": workers, "isolation": isolation, "load_avg_1m": load, "cpus": os.cpu_count(),
                 "snippets": list(snippets), "concurrencies": list(concurrencies)}
    t_start = time.perf_counter()
    with Sandbox(workers=workers, timeout_s=30.0, isolation=isolation) as sb:
        async def pool_call(code):
            return (await sb.arun(code)).stdout

        async def measure():
            for name in snippets:
                code = SNIPPETS[name]
                for _ in range(5):  # warm-up: contexts ready, caches hot
                    await pool_call(code)
                await _fresh(code)
                rows = {}
                for c in concurrencies:
                    pool = await _cell(lambda code=code: pool_call(code), EXPECTED[name], max(n_latency, 4 * c), c)
                    fresh = await _cell(lambda code=code: _fresh(code), EXPECTED[name], max(n_baseline, c), c)
                    rows[c] = {"sandbox": pool, "fresh": fresh}
                one = rows[concurrencies[0]]
                out[name] = {"by_concurrency": rows, "p50_ms": one["sandbox"]["p50_ms"],
                             "p99_ms": one["sandbox"]["p99_ms"],
                             "exec_per_s": max(r["sandbox"]["exec_per_s"] for r in rows.values()),
                             "baseline_p50_ms": one["fresh"]["p50_ms"],
                             "speedup_p50": one["fresh"]["p50_ms"] / one["sandbox"]["p50_ms"],
                             "wrong_outputs": sum(r["sandbox"]["wrong"] + r["fresh"]["wrong"] for r in rows.values())}

        asyncio.run(measure())
    out["seconds"] = time.perf_counter() - t_start
    for line in format_table(out):
        log(line)
    return out


def format_table(out: dict) -> list[str]:
    """The figures as a markdown table (what the README shows)."""
    lines = [f"sandbox bench: isolation={out['isolation']}, {out['workers']} workers, {out['cpus']} CPUs, load average "
             f"{out['load_avg_1m']:.2f} at start, {out['seconds']:.0f} s",
             "", "| snippet | callers | sandbox p50 / p90 / p99 ms | sandbox exec/s | fresh interpreter p50 / p90 / "
             "p99 ms | fresh exec/s | p50 speedup | exec/s ratio | wrong |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in out["snippets"]:
        for c in out["concurrencies"]:
            s, f = out[name]["by_concurrency"][c]["sandbox"], out[name]["by_concurrency"][c]["fresh"]
            lines.append(f"| {name} | {c} | {s['p50_ms']:.1f} / {s['p90_ms']:.1f} / {s['p99_ms']:.1f} | "
                         f"{s['exec_per_s']:.0f} | {f['p50_ms']:.0f} / {f['p90_ms']:.0f} / {f['p99_ms']:.0f} | "
                         f"{f['exec_per_s']:.1f} | {f['p50_ms'] / s['p50_ms']:.1f}x | "
                         f"{s['exec_per_s'] / f['exec_per_s']:.0f}x | {s['wrong'] + f['wrong']} |")
    return lines


async def _sessions_at_once(sb, n: int) -> tuple[float, int]:
    """n one-call sessions at once (each computes a product); wall seconds and wrong outputs."""
    async def one(i: int) -> bool:
        s = sb.session()
        try:
            r = await s.arun(f"print({1234 + i} * 567)")
        finally:
            await asyncio.to_thread(s.close)
        return r.stdout != f"{(1234 + i) * 567}\n"

    t0 = time.perf_counter()
    wrong = sum(await asyncio.gather(*(one(i) for i in range(n))))
    return time.perf_counter() - t0, wrong


def run_rollout_bench(workers: int = 2, sessions: int = 128, reps: int = 3, isolation: str = "full",
                      log=print) -> dict:
    """Wall time of `sessions` one-call sessions at once, default stack vs lean workers, `reps` times each
    (alternating); print a table and return {"default": {...}, "lean": {...}, "speedup": median ratio}."""
    from zerotir.config.schema import SANDBOX_PREIMPORT
    from zerotir.sandbox import Sandbox

    if sessions < 1 or reps < 1:
        raise ValueError("sessions and reps must be >= 1")
    arms = {"default": tuple(SANDBOX_PREIMPORT), "lean": ()}
    out: dict = {"workers": workers, "isolation": isolation, "sessions": sessions, "reps": reps,
                 "load_avg_1m": os.getloadavg()[0], "cpus": os.cpu_count()}
    walls: dict[str, list[float]] = {a: [] for a in arms}
    wrong = {a: 0 for a in arms}
    pools = {a: Sandbox(workers=workers, timeout_s=30.0, isolation=isolation, preimport=m) for a, m in arms.items()}
    try:
        async def measure():
            for a in arms:  # warm-up: workers up, contexts pre-forked
                await _sessions_at_once(pools[a], 8)
            for _ in range(reps):
                for a in arms:
                    w, bad = await _sessions_at_once(pools[a], sessions)
                    walls[a].append(w)
                    wrong[a] += bad

        asyncio.run(measure())
    finally:
        for sb in pools.values():
            sb.close()
    for a in arms:
        out[a] = {"preimport": list(arms[a]), "median_s": percentile(walls[a], 0.5), "walls_s": walls[a],
                  "ms_per_session": 1e3 * percentile(walls[a], 0.5) / sessions, "wrong": wrong[a]}
    out["speedup"] = out["default"]["median_s"] / out["lean"]["median_s"]
    log(f"sandbox rollout bench: {sessions} one-call sessions at once, isolation={isolation}, {workers} workers, "
        f"{out['cpus']} CPUs, load average {out['load_avg_1m']:.2f} at start, {reps} repetitions")
    log("")
    log("| workers import | median wall s | ms per session | wrong |")
    log("|---|---:|---:|---:|")
    for a, label in (("default", "math stack (default)"), ("lean", "nothing (preimport=[])")):
        log(f"| {label} | {out[a]['median_s']:.2f} | {out[a]['ms_per_session']:.1f} | {out[a]['wrong']} |")
    log(f"\nlean workers: {out['speedup']:.2f}x faster")
    return out
