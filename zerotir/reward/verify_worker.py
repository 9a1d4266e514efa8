"""Verifier worker process: `python -m zerotir.reward.verify_worker MEMORY_MB`.

Reads JSON lines ["pred", "gold"] on stdin, writes {"correct": bool, "error": str|null} per line on stdout, after
one {"ready": true} line once math-verify is imported. Exits at EOF. The parent (verifier.Verifier) enforces the
time limit by killing this process; here only the address-space limit is set.
"""

from __future__ import annotations

import json
import logging
import sys


WARMUP: tuple[tuple[str, str], ...] = (
    ("1", "1"), ("x^2+2x+1", "(x+1)^2"), ("(1,2]", "(1, 2]"), ("\\{1,2\\}", "\\{2,1\\}"), ("50\\%", "0.5"),
    ("\\frac{\\sqrt{3}}{2}", "0.866"), ("\\text{B}", "B"), ("x=5", "5"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
)


def verify_pair(pred: str, gold: str) -> bool:
    """math-verify comparison of two answer strings in THIS process (no timeout: run it in a worker)."""
    from math_verify import parse, verify

    g = parse("\\boxed{" + gold + "}", parsing_timeout=None)
    p = parse("\\boxed{" + pred + "}", parsing_timeout=None)
    if not g or not p:
        return False
    return bool(verify(g, p, timeout_seconds=None))


def _die_with_parent() -> None:
    """Linux: get SIGKILLed when the parent dies, even mid-computation (a SIGKILLed trainer must not leave a worker
    grinding through 10^{10^{10}}). Elsewhere the worker still exits at EOF on stdin once it is idle."""
    try:
        import ctypes
        import os
        import signal

        parent = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))   # PR_SET_PDEATHSIG
        if os.getppid() != parent:   # the parent died before the call took effect
            os._exit(0)
    except Exception:  # noqa: BLE001 — best effort
        pass


def main(argv: list[str]) -> None:
    _die_with_parent()
    memory_mb = int(argv[0]) if argv else 0
    logging.disable(logging.WARNING)   # math-verify warns that its own timeout is off: the parent enforces one
    import math_verify  # noqa: F401 — import before the memory limit and before saying ready

    for pred, gold in WARMUP:          # first calls build grammar tables and import sympy submodules (~2 s)
        verify_pair(pred, gold)
    if memory_mb > 0:
        try:
            import resource

            lim = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
        except (ImportError, ValueError, OSError):
            pass
    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    sys.setrecursionlimit(10_000)
    for line in sys.stdin:
        try:
            pred, gold = json.loads(line)
            reply = {"correct": verify_pair(str(pred), str(gold)), "error": None}
        except BaseException as e:  # noqa: BLE001 — MemoryError/RecursionError included: report, keep serving
            reply = {"correct": False, "error": f"{type(e).__name__}: {str(e)[:200]}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
