"""Leak census and the mixed load test (used by tests/sandbox and bench/sandbox.py).

The census counts what a sandbox could leave behind on the host: processes running under the sandbox's uids or
parented by its workers, the parent's open file descriptors, and entries in the host's /tmp and /dev/shm that are
owned by a sandbox uid or are a context's directory.
"""

from __future__ import annotations

import os
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from zerotir.sandbox.pool import UID_BLOCKS, UID_MIN, UID_SPAN

UID_MAX = UID_MIN + UID_BLOCKS * UID_SPAN


def _descendants(pids: list[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = set(), list(pids)
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def sandbox_uid_processes(roots: list[int] | None = None) -> list[int]:
    """Host pids whose real uid is in the sandbox's uid range (executions still running); with `roots`, only
    those descending from these pids (one pool's workers: other pools on the host are not counted)."""
    found = []
    pids = _descendants(roots) if roots is not None else [int(d) for d in os.listdir("/proc") if d.isdigit()]
    for d in pids:
        try:
            with open(f"/proc/{d}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if UID_MIN <= int(line.split()[1]) < UID_MAX:
                            found.append(int(d))
                        break
        except OSError:
            continue
    return found


@dataclass
class Census:
    uid_procs: int
    worker_descendants: int
    open_fds: int
    tmp_entries: int
    shm_entries: int
    detail: dict = field(default_factory=dict)


def take_census(sb) -> Census:
    """Snapshot of what the pool holds now. Call after the pool is idle (no call in flight)."""
    fds = len(os.listdir("/proc/self/fd"))
    tmp, shm = _sandbox_entries("/tmp"), _sandbox_entries("/dev/shm")
    roots = sb.worker_pids()
    return Census(uid_procs=len(sandbox_uid_processes(roots)), worker_descendants=len(_descendants(roots)),
                  open_fds=fds, tmp_entries=tmp, shm_entries=shm)


def _sandbox_entries(directory: str) -> int:
    """Entries of a host directory that a sandbox could have left: owned by a sandbox uid, or a context's private
    directory (isolation 'rlimits'/'none'). Other users' files on a shared host are not counted."""
    n = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        try:
            st = os.lstat(os.path.join(directory, name))
        except OSError:
            continue
        n += UID_MIN <= st.st_uid < UID_MAX or name.startswith("zerotir-ctx-")
    return n


def idle_baseline(sb, settle_s: float = 0.3) -> Census:
    time.sleep(settle_s)
    return take_census(sb)


# ------------------------------------------------------------------------------------------------ load test

HOSTILE = [
    "while True: pass",
    "import time; time.sleep(60)",
    "x = ' ' * (10**10)",
    "import os\nwhile True:\n    try: os.fork()\n    except OSError: break",
    "import os,time\nif os.fork()==0:\n    os.setsid()\n    time.sleep(60)\nprint('p')",
    "while True: print('y' * 4096)",
    "import ctypes; ctypes.string_at(0)",
    "import os; os.kill(-1, 9)",
    "f = open('/tmp/fill', 'wb')\nwhile True: f.write(b'z' * (1 << 20))",
    "import threading, time\nfor _ in range(1000): threading.Thread(target=time.sleep, args=(60,)).start()",
]


@dataclass
class LoadReport:
    requests: int
    hostile: int
    lost: int
    mismatched: int
    by_status: dict
    seconds: float
    leaked_before_after: tuple
    examples: list = field(default_factory=list)
    """Up to 5 mismatched or failed benign requests with their results (for diagnosis)."""
    benign_failed: int = 0


def load_test(sb, n: int = 2000, hostile_share: float = 0.12, concurrency: int = 8, seed: int = 0,
              timeout_s: float = 1.0) -> LoadReport:
    """`n` mixed requests from `concurrency` threads, each with its own nonce.

    lost: calls that came back sandbox_error. mismatched: a result carrying another request's nonce, or a benign
    call that finished 'ok' with anything but its exact expected output. benign_failed: benign calls that did not
    finish 'ok' (on an overloaded machine a call can run past its timeout; that is a timeout, not a wrong result).
    """
    rng = random.Random(seed)
    plan = []
    for i in range(n):
        nonce = f"{seed}-{i}-{rng.getrandbits(48):012x}"
        if rng.random() < hostile_share:
            plan.append((nonce, rng.choice(HOSTILE), None))
        else:
            kind = rng.randrange(3)
            if kind == 0:
                code, want = f"print({nonce!r})", f"{nonce}\n"
            elif kind == 1:
                k = rng.randrange(2, 10**9)
                code, want = f"import sympy\nn = {k}\nf = sympy.factorint(n)\nprint({nonce!r}, n)", f"{nonce} {k}\n"
            else:
                m = rng.randrange(1, 1000)
                code = f"import numpy as np\na = np.arange({m})\nprint({nonce!r}, int(a.sum()))"
                want = f"{nonce} {m * (m - 1) // 2}\n"
            plan.append((nonce, code, want))
    before = idle_baseline(sb)
    lost = mismatched = benign_failed = 0
    by_status: dict = {}
    t0 = time.monotonic()

    def one(item):
        return item, sb.run(item[1], timeout_s=timeout_s)

    examples: list = []
    pattern = re.compile(rf"{seed}-\d+-[0-9a-f]{{12}}")
    with ThreadPoolExecutor(concurrency) as ex:
        for (nonce, code, want), r in ex.map(one, plan):
            by_status[r.status] = by_status.get(r.status, 0) + 1
            if r.status == "sandbox_error":
                lost += 1
                continue
            foreign = set(pattern.findall(r.stdout + r.stderr)) - {nonce}
            bad = bool(foreign) or (want is not None and r.status == "ok" and r.stdout != want)
            failed = want is not None and r.status != "ok"
            mismatched += bad
            benign_failed += failed and not bad
            if (bad or failed) and len(examples) < 5:
                examples.append({"nonce": nonce, "kind": "mismatched" if bad else "benign_failed",
                                 "code": code[:200], "result": r.to_dict()})
    seconds = time.monotonic() - t0
    after = idle_baseline(sb, settle_s=1.0)
    return LoadReport(requests=n, hostile=sum(w is None for _, _, w in plan), lost=lost, mismatched=mismatched,
                      by_status=by_status, seconds=seconds, leaked_before_after=(before, after),
                      examples=examples, benign_failed=benign_failed)
