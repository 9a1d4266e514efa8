"""Sandbox speed and robustness, measured in one run.

    .venv/bin/python bench/sandbox.py [--workers 2] [--n 100] [--baseline 15] [--load 2000] [--total 10000]

1. Speed (`zerotir sandbox bench`): p50/p90/p99 latency and exec/s at 1, 4, 16 and 64 callers for `print(1+1)` and
   `import sympy; print(sympy.factorint(2**64-1))` on the warm isolated pool, against a fresh interpreter per call
   (the baseline), side by side. Targets: sympy p50 <= 8 ms and >= 40x the baseline; trivial >= 100 exec/s.
   On a shared machine wall-clock figures measure the neighbours too: check `uptime` before trusting them.
2. Load: `--load` mixed requests (~12% hostile: infinite loops, sleeps, memory/fork/thread bombs, floods, disk fill,
   daemons, segfaults, kill(-1)) from 2 x workers threads; each benign request prints a nonce that must come back
   exactly (0 lost, 0 mismatched). More rounds follow until `--total` executions, then a census: processes under
   sandbox uids, processes under the workers, open fds, host /tmp and /dev/shm entries (0 leaked).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support, when run as a script


def _targets(speed: dict) -> None:
    s, t = speed["sympy"], speed["trivial"]
    print(f"targets: sympy p50 {s['p50_ms']:.1f} ms (<= 8: {'yes' if s['p50_ms'] <= 8 else 'NO'}), "
          f"speedup {s['speedup_p50']:.1f}x (>= 40: {'yes' if s['speedup_p50'] >= 40 else 'NO'}), "
          f"trivial {t['exec_per_s']:.0f} exec/s measured (>= 100: {'yes' if t['exec_per_s'] >= 100 else 'NO'})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n", type=int, default=100, help="sequential calls per snippet (latency)")
    ap.add_argument("--baseline", type=int, default=15, help="fresh-interpreter calls per snippet")
    ap.add_argument("--load", type=int, default=2000, help="mixed requests in the load test (0 = skip)")
    ap.add_argument("--total", type=int, default=10000, help="executions before the final census")
    ap.add_argument("--isolation", default="full")
    ap.add_argument("--json", default="", help="also write the figures to this file")
    ap.add_argument("--skip-speed", action="store_true", help="only the load test and census")
    args = ap.parse_args()

    from tests.support.census import idle_baseline, load_test
    from zerotir.sandbox import Sandbox
    from zerotir.sandbox.bench import run_bench

    figures: dict = {}
    if not args.skip_speed:
        figures["speed"] = run_bench(workers=args.workers, n_latency=args.n, n_baseline=args.baseline,
                                     isolation=args.isolation)
        _targets(figures["speed"])
    ok = True
    if args.load:
        with Sandbox(workers=args.workers, timeout_s=1.0, isolation=args.isolation) as sb:
            first = idle_baseline(sb)
            rep = load_test(sb, n=args.load, concurrency=2 * args.workers, seed=0)
            print(f"load: {rep.requests} requests ({rep.hostile} hostile) from {2 * args.workers} threads on "
                  f"{args.workers} workers in {rep.seconds:.1f} s: lost={rep.lost} mismatched={rep.mismatched} "
                  f"benign_failed={rep.benign_failed} statuses={rep.by_status}")
            done, seed, rounds = rep.requests, 1, [rep]  # executions on this pool
            while done < args.total:
                r = load_test(sb, n=min(2000, args.total - done), concurrency=2 * args.workers, seed=seed)
                rounds.append(r)
                done += r.requests
                seed += 1
                print(f"  round {seed - 1}: {r.requests} requests in {r.seconds:.1f} s: lost={r.lost} "
                      f"mismatched={r.mismatched} benign_failed={r.benign_failed}")
            time.sleep(1.0)
            last = idle_baseline(sb, settle_s=1.0)
            lost = sum(r.lost for r in rounds)
            mism = sum(r.mismatched for r in rounds)
            leaked = {k: getattr(last, k) - getattr(first, k) for k in
                      ("uid_procs", "worker_descendants", "open_fds", "tmp_entries", "shm_entries")}
            failed = sum(r.benign_failed for r in rounds)
            print(f"census after {done} executions ({sum(r.hostile for r in rounds)} hostile): lost={lost} "
                  f"mismatched={mism} benign_failed={failed}; change since start: {leaked}; health={sb.health()}")
            for r in rounds:
                for ex in r.examples:
                    print(f"  {ex['kind']}: {ex['code'][:60]!r} -> {ex['result']['status']} "
                          f"stdout={ex['result']['stdout'][:60]!r} ({ex['result']['duration_s']:.2f} s)")
            figures["load"] = {"first": dataclasses.asdict(rep.leaked_before_after[0]) | {"lost": rep.lost},
                               "requests": rep.requests, "hostile": rep.hostile, "lost_first": rep.lost,
                               "mismatched_first": rep.mismatched, "statuses_first": rep.by_status,
                               "executions": done, "lost": lost, "mismatched": mism, "benign_failed": failed,
                               "leaked": leaked}
            ok = lost == 0 and mism == 0 and leaked["uid_procs"] <= 0 and leaked["tmp_entries"] <= 0 \
                and leaked["shm_entries"] <= 0 and leaked["open_fds"] <= 0 and leaked["worker_descendants"] <= 0
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1, default=str)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
