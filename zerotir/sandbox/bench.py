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


class CpuMeter:
    """CPU seconds used by this process and every descendant, via a cgroup-v1 cpuacct group of our own.

    Latency and exec/s on a shared machine mostly measure the neighbours; CPU per execution does not. Needs a
    writable /sys/fs/cgroup/cpuacct (root); otherwise `read()` returns None and the figure is left out.
    """

    ROOT = "/sys/fs/cgroup/cpuacct"

    def __init__(self):
        import os

        self.path = None
        try:
            path = f"{self.ROOT}/zerotir-bench-{os.getpid()}"
            os.makedirs(path, exist_ok=True)
            with open(f"{path}/cgroup.procs", "w") as f:
                f.write(str(os.getpid()))
            self.path = path
        except OSError:
            self.path = None

    def read(self) -> float | None:
        if self.path is None:
            return None
        with open(f"{self.path}/cpuacct.usage") as f:
            return int(f.read()) / 1e9

    def close(self) -> None:
        import os

        if self.path is None:
            return
        try:
            with open(f"{self.ROOT}/cgroup.procs", "w") as f:
                f.write(str(os.getpid()))
            os.rmdir(self.path)
        except OSError:
            pass
        self.path = None


def fresh_interpreter(code: str) -> tuple[float, str]:
    """The baseline: one new `python -c` process per call (what a naive executor does)."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return time.perf_counter() - t0, p.stdout


def run_bench(workers: int = 2, n_latency: int = 100, n_baseline: int = 15, throughput_s: float = 5.0,
              isolation: str = "full", log=print) -> dict:
    """Return {snippet: {p50_ms, p99_ms, exec_per_s, baseline_p50_ms, speedup_p50, cpu_ms_per_exec, ...}}; print a
    table."""
    out: dict = {"workers": workers, "isolation": isolation}
    meter = CpuMeter()
    try:
        _measure(out, meter, workers, n_latency, n_baseline, throughput_s, isolation)
    finally:
        meter.close()
    log(f"sandbox bench: isolation={isolation} workers={workers} (latency: {n_latency} sequential calls; "
        f"throughput: {2 * workers} parallel callers for {throughput_s:g} s; baseline: {n_baseline} fresh interpreters)")
    log(f"{'snippet':8s} {'p50 ms':>8s} {'p99 ms':>8s} {'exec/s':>8s} {'fresh p50 ms':>13s} {'speedup':>8s} "
        f"{'cpu ms/exec':>12s} {'fresh cpu ms':>13s} {'cpu ratio':>10s} {'wrong':>6s}")
    for name in SNIPPETS:
        d = out[name]
        cpu = (f"{d['cpu_ms_per_exec']:12.2f} {d['baseline_cpu_ms']:13.1f} {d['cpu_ratio']:9.1f}x"
               if d.get("cpu_ms_per_exec") else f"{'n/a':>12s} {'n/a':>13s} {'n/a':>10s}")
        log(f"{name:8s} {d['p50_ms']:8.2f} {d['p99_ms']:8.2f} {d['exec_per_s']:8.1f} {d['baseline_p50_ms']:13.1f} "
            f"{d['speedup_p50']:7.1f}x {cpu} {d['wrong_outputs']:6d}")
    if out["trivial"].get("cpu_ms_per_exec"):
        log(f"CPU-bound capacity on 2 dedicated cores: trivial {2000 / out['trivial']['cpu_ms_per_exec']:.0f} exec/s, "
            f"sympy {2000 / out['sympy']['cpu_ms_per_exec']:.0f} exec/s (all processes counted: pool, workers, "
            f"contexts, this process)")
    return out


def _measure(out, meter, workers, n_latency, n_baseline, throughput_s, isolation) -> None:
    from zerotir.sandbox import Sandbox

    with Sandbox(workers=workers, timeout_s=10.0, isolation=isolation) as sb:
        for name, code in SNIPPETS.items():
            for _ in range(5):  # warm-up: contexts ready, caches hot
                sb.run(code)
            lat, bad = [], 0
            time.sleep(0.3)  # let the pool's background refills finish before counting CPU
            c0 = meter.read()
            for _ in range(n_latency):  # sequential: latency of one call on an otherwise idle pool
                t0 = time.perf_counter()
                r = sb.run(code)
                lat.append(time.perf_counter() - t0)
                bad += r.status != "ok" or r.stdout != EXPECTED[name]
            time.sleep(0.3)  # the refills these calls triggered are part of their cost
            c1 = meter.read()
            # Throughput: `2 * workers` callers in parallel for throughput_s seconds.
            done, t_end = [0], time.perf_counter() + throughput_s

            def caller(code=code, t_end=t_end):  # bound now: the loop moves on after this round
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
            b0 = meter.read()
            for _ in range(n_baseline):
                dt, so = fresh_interpreter(code)
                base.append(dt)
                bad += so != EXPECTED[name]
            b1 = meter.read()
            b50 = statistics.median(base)
            out[name] = {"p50_ms": 1e3 * statistics.median(lat), "p99_ms": 1e3 * _pct(lat, 0.99),
                         "exec_per_s": rate, "baseline_p50_ms": 1e3 * b50,
                         "speedup_p50": b50 / statistics.median(lat), "wrong_outputs": bad}
            if c0 is not None:
                # Idle pool CPU over the same span (its loop ticks, the zygote's reap loop) is included: honest upper bound.
                cpu_ms = 1e3 * (c1 - c0) / n_latency
                base_ms = 1e3 * (b1 - b0) / n_baseline
                out[name].update(cpu_ms_per_exec=cpu_ms, baseline_cpu_ms=base_ms, cpu_ratio=base_ms / cpu_ms)
