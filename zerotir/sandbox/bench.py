"""Sandbox benchmark: warm isolated pool vs. a fresh interpreter per call, measured side by side in one run."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

SNIPPETS = {
    "trivial": "print(1+1)",
    "sympy": "import sympy; print(sympy.factorint(2**64-1))",
}
EXPECTED = {"trivial": "2\n", "sympy": "{3: 1, 5: 1, 17: 1, 257: 1, 641: 1, 65537: 1, 6700417: 1}\n"}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def fresh_interpreter(code: str) -> tuple[float, str]:
    """The baseline: one new `python -c` process per call (what a naive executor does)."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return time.perf_counter() - t0, p.stdout


def run_bench(workers: int = 2, n_latency: int = 100, n_baseline: int = 15, throughput_s: float = 5.0,
              isolation: str = "full", log=print) -> dict:
    """Return {snippet: {p50_ms, p99_ms, exec_per_s, baseline_p50_ms, speedup}} and print a table."""
    from zerotir.sandbox import Sandbox

    out: dict = {"workers": workers, "isolation": isolation}
    with Sandbox(workers=workers, timeout_s=10.0, isolation=isolation) as sb:
        for name, code in SNIPPETS.items():
            for _ in range(5):  # warm-up: contexts ready, caches hot
                sb.run(code)
            lat, bad = [], 0
            for _ in range(n_latency):  # sequential: latency of one call on an otherwise idle pool
                t0 = time.perf_counter()
                r = sb.run(code)
                lat.append(time.perf_counter() - t0)
                bad += r.status != "ok" or r.stdout != EXPECTED[name]
            # Throughput: `2 * workers` callers in parallel for throughput_s seconds.
            done, t_end = [0], time.perf_counter() + throughput_s

            def caller():
                n = 0
                while time.perf_counter() < t_end:
                    r = sb.run(code)
                    n += r.status == "ok"
                return n

            t0 = time.perf_counter()
            with ThreadPoolExecutor(2 * workers) as ex:
                done = list(ex.map(lambda _: caller(), range(2 * workers)))
            rate = sum(done) / (time.perf_counter() - t0)
            base = []
            for _ in range(n_baseline):
                dt, so = fresh_interpreter(code)
                base.append(dt)
                bad += so != EXPECTED[name]
            b50 = statistics.median(base)
            out[name] = {"p50_ms": 1e3 * statistics.median(lat), "p99_ms": 1e3 * _pct(lat, 0.99),
                         "exec_per_s": rate, "baseline_p50_ms": 1e3 * b50,
                         "speedup_p50": b50 / statistics.median(lat), "wrong_outputs": bad}
    log(f"sandbox bench: isolation={isolation} workers={workers} (latency: {n_latency} sequential calls; "
        f"throughput: {2 * workers} parallel callers for {throughput_s:g} s; baseline: {n_baseline} fresh interpreters)")
    log(f"{'snippet':8s} {'p50 ms':>8s} {'p99 ms':>8s} {'exec/s':>8s} {'fresh p50 ms':>13s} {'speedup':>8s} {'wrong':>6s}")
    for name in SNIPPETS:
        d = out[name]
        log(f"{name:8s} {d['p50_ms']:8.2f} {d['p99_ms']:8.2f} {d['exec_per_s']:8.1f} {d['baseline_p50_ms']:13.1f} "
            f"{d['speedup_p50']:7.1f}x {d['wrong_outputs']:6d}")
    return out
