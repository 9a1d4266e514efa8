"""Answer verification with math-verify in a pool of killable worker processes.

    with Verifier(workers=2, timeout_s=1.0) as v:
        results = v.verify_many([("\\frac{1}{2}", "0.5"), ("10^{10^{10}}", "5")])
        # [VerifyResult(correct=True, ...), VerifyResult(correct=False, timed_out=True, ...)]

Why processes: sympy can spend minutes (or unbounded memory) inside one C-level operation — 10^{10^{10}}, a
10,000-deep fraction, a huge matrix — where no signal or thread timeout can interrupt it. Each item runs in a
worker process (`python -m zerotir.reward.verify_worker`, JSON lines over pipes) under a time limit (CPU time of
the worker, capped at wall_factor x timeout_s of wall time; see `Verifier`); a worker past it is SIGKILLed and
replaced, and the item scores wrong with timed_out=True. A worker that crashes (segfault on deep recursion, out of
memory under its address-space limit) is replaced the same way, with `error` set. One warm spare is kept so a
replacement is ready at once (a fresh one needs ~0.5 s of CPU to import math-verify and warm its parser).
Workers are plain subprocesses, not multiprocessing children: nothing is forked from a trainer holding threads
and GPU state, the user's main script is never re-imported, and a worker dies with its parent (Linux).
`verify_many` never raises and never blocks longer than about wall_factor x timeout_s per item per worker.

Both sides are wrapped as \\boxed{...} and parsed with math-verify's LaTeX + expression extraction; then
math-verify's `verify(gold, pred)` decides. Answers longer than `max_answer_chars` score wrong without parsing.

What this does NOT cover (these score wrong, or right, regardless of the intended meaning):
  * unit conversion: "100 cm" vs gold "1 m" is wrong; units are stripped, so "10 cm" vs gold "10" is right;
  * multiple-choice mapping: a letter is only equal to the same letter, never to the option's text or value;
  * approximate answers: values are compared after rounding to 6 decimals, so "0.333" vs 1/3 is wrong but
    "0.3333333" is right; the gold is never approximated;
  * free-text answers beyond exact (normalised) string match: "Monday" == "\\text{Monday}", synonyms are not;
  * ordering conventions: math-verify may treat "3, 4" and "4, 3" as equal sets when the gold is a bare list;
  * equations/inequalities vs values follow math-verify ("x=5" matches gold "5"); several boxed answers are
    never combined — only the last box is read (see extract.py);
  * anything math-verify cannot parse is wrong (error set when it raised);
  * answers whose comparison needs more than timeout_s of CPU are wrong: checking each of the 1,287 distinct
    gold answers of the shared benchmarks against itself, one (a long Minerva physics expression) timed out at 1 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

from zerotir.telemetry import get_logger

log = get_logger("reward.verifier")


@dataclass
class VerifyResult:
    correct: bool
    timed_out: bool = False
    error: str | None = None
    """Why the item could not be decided (parse failure, crash, too long); None when math-verify answered."""


# --------------------------------------------------------------------------------------------- parent side


try:
    _CLK_TCK = os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
    _CLK_TCK = 100


_PKG_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""Directory holding the zerotir package, so a worker imports this same code even when it is not installed."""


class _Worker:
    """One verifier subprocess. `ready` turns True when it has imported math-verify and said so."""

    def __init__(self, memory_mb: int):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zerotir.reward.verify_worker", str(int(memory_mb))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_PKG_ROOT, os.environ.get("PYTHONPATH")]))})
        self.fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        os.set_blocking(self.fd, False)
        self.buf = b""
        self.ready = False
        self.item: int | None = None
        self.deadline = 0.0
        self.sent_at = 0.0
        self.cpu_at_send: float | None = None

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) the worker has used so far, from /proc; None where unavailable."""
        try:
            with open(f"/proc/{self.proc.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _CLK_TCK
        except (OSError, ValueError, IndexError):
            return None

    def fileno(self) -> int:
        return self.fd

    def send(self, obj: Any) -> None:
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def read_lines(self) -> list[str] | None:
        """Complete lines available now; None at EOF (the worker died)."""
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        except OSError:
            return None
        if not chunk:
            return None
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        return [ln.decode("utf-8", "replace") for ln in lines]

    def kill(self, wait: bool = True) -> None:
        """SIGKILL; with `wait`, reap it (up to 2 s). A worker that held a huge expression can take seconds to exit on
        a loaded machine, so the scoring path does not wait (the pool reaps it later)."""
        try:
            self.proc.kill()
            if wait:
                self.proc.wait(timeout=2.0)
        except Exception:  # noqa: BLE001 — best effort: it may be gone already
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()  # type: ignore[union-attr]
            except Exception:  # noqa: BLE001
                pass


class Verifier:
    """A pool of `workers` math-verify processes with a per-item wall-clock limit `timeout_s`.

    Use as a context manager (or call close()). Not thread-safe: one caller at a time. Results are cached per
    (pred, gold) pair (`cache_size` most recent), so a repeated hostile answer costs its timeout only once.
    `memory_mb` is each worker's address-space limit (a huge expression fails there instead of swapping).
    The limit `timeout_s` is CPU time of the worker (read from /proc; wall time where that is unavailable), capped
    at `wall_factor` x timeout_s of wall time: on an idle machine a hostile item returns in ~timeout_s, and on a
    machine shared by many processes a legitimate item is not failed for want of CPU.
    """

    def __init__(self, workers: int = 2, timeout_s: float = 1.0, *, memory_mb: int = 2048,
                 max_answer_chars: int = 1000, cache_size: int = 100_000, spare: bool = True,
                 wall_factor: float = 2.0):
        self.n_workers = max(1, int(workers))
        self.timeout_s = float(timeout_s)
        self.wall_factor = max(1.0, float(wall_factor))
        self.memory_mb = memory_mb
        self.max_answer_chars = max_answer_chars
        self.cache_size = cache_size
        self.spare = spare
        self._cache: OrderedDict[tuple[str, str], VerifyResult] = OrderedDict()
        self._workers: list[_Worker] = []
        self._spares: list[_Worker] = []
        self.restarts = 0
        """Workers killed and replaced so far (timeouts and crashes)."""
        self.timeouts = 0
        """Items that hit the time limit so far."""
        self._startup_failures = 0
        self._dying: list[subprocess.Popen] = []
        """Killed workers not yet reaped."""

    # ---- lifecycle
    def __enter__(self) -> "Verifier":
        self._ensure_workers()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop all workers: close their input (they exit on EOF), then kill whatever is left."""
        workers, self._workers, self._spares = self._workers + self._spares, [], []
        for proc in self._dying:
            try:
                proc.wait(timeout=2.0)
            except Exception:  # noqa: BLE001
                pass
        self._dying = []
        for w in workers:
            try:
                w.proc.stdin.close()  # type: ignore[union-attr]
            except Exception:  # noqa: BLE001
                pass
        deadline = time.monotonic() + 0.5
        for w in workers:
            try:
                w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001
                pass
            w.kill()

    def __del__(self) -> None:  # a Verifier dropped without close() must not leave processes behind
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def pids(self) -> list[int]:
        """Process ids of the live workers (spares excluded)."""
        return [w.proc.pid for w in self._workers if w.proc.poll() is None]

    def _new_worker(self) -> _Worker:
        if self._spares:
            return self._spares.pop()
        return _Worker(self.memory_mb)

    def _ensure_workers(self) -> None:
        alive = []
        for w in self._workers:
            if w.proc.poll() is None:
                alive.append(w)
            else:
                w.kill()
        self._workers = alive
        while len(self._workers) < self.n_workers:
            self._workers.append(self._new_worker())
        if self.spare and not self._spares:
            self._spares.append(_Worker(self.memory_mb))

    def _replace(self, w: _Worker) -> None:
        w.kill(wait=False)
        self._dying = [d for d in self._dying if d.poll() is None] + [w.proc]  # reaped here and by close()
        self.restarts += 1
        self._workers[self._workers.index(w)] = self._new_worker()
        if self.spare and not self._spares:
            self._spares.append(_Worker(self.memory_mb))

    def _extend(self, w: _Worker) -> bool:
        """On a loaded machine a worker may have had little CPU by its wall deadline: the limit is CPU time, so
        give it the CPU time it has not had yet (up to `wall_factor` x timeout_s of wall time). True if extended."""
        now = time.monotonic()
        cpu = w.cpu_seconds()
        if cpu is None or w.cpu_at_send is None or now - w.sent_at >= self.wall_factor * self.timeout_s:
            return False
        used = cpu - w.cpu_at_send
        if used >= 0.95 * self.timeout_s:
            return False
        w.deadline = min(now + max(0.05, self.timeout_s - used), w.sent_at + self.wall_factor * self.timeout_s)
        return True

    # ---- verification
    def verify_many(self, pairs: list[tuple[str, str]]) -> list[VerifyResult]:
        """Verify each (pred, gold) pair; one VerifyResult per pair, in order. Never raises."""
        results: list[VerifyResult | None] = [None] * len(pairs)
        todo: dict[tuple[str, str], list[int]] = {}
        for i, (pred, gold) in enumerate(pairs):
            key = (str(pred), str(gold))
            if key in self._cache:
                self._cache.move_to_end(key)
                results[i] = self._cache[key]
            elif len(key[0]) > self.max_answer_chars or len(key[1]) > self.max_answer_chars:
                results[i] = VerifyResult(False, error=f"answer longer than {self.max_answer_chars} characters")
            else:
                todo.setdefault(key, []).append(i)
        if todo:
            try:
                decided = self._run(list(todo))
            except Exception as e:  # noqa: BLE001 — the trainer must go on: undecided items score wrong
                log.error("verifier failure (%s: %s); %d items scored wrong", type(e).__name__, e, len(todo))
                decided = {}
            for key, idxs in todo.items():
                res = decided.get(key) or VerifyResult(False, error="verifier unavailable")
                if key in decided:
                    self._remember(key, res)
                for i in idxs:
                    results[i] = res
        return [r if r is not None else VerifyResult(False, error="not verified") for r in results]

    def _remember(self, key: tuple[str, str], res: VerifyResult) -> None:
        self._cache[key] = res
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _run(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], VerifyResult]:
        """Schedule `keys` over the workers: one item per worker at a time, each with its own deadline."""
        self._ensure_workers()
        queue = deque(range(len(keys)))
        tries = [0] * len(keys)
        out: dict[tuple[str, str], VerifyResult] = {}
        startup_deadline = time.monotonic() + 60.0   # workers that never come up: give up, score wrong
        while queue or any(w.item is not None for w in self._workers):
            for w in self._workers:
                if w.ready and w.item is None and queue:
                    k = queue.popleft()
                    try:
                        w.cpu_at_send = w.cpu_seconds()
                        w.send(keys[k])
                        w.item, w.sent_at = k, time.monotonic()
                        w.deadline = w.sent_at + self.timeout_s
                    except (OSError, ValueError):  # dead worker: replace it, retry the item once
                        tries[k] += 1
                        if tries[k] < 2:
                            queue.appendleft(k)
                        else:
                            out[keys[k]] = VerifyResult(False, error="verifier worker unavailable")
                        self._replace(w)
            pending = [w for w in self._workers if w.item is not None or not w.ready]
            if not pending:
                continue
            now = time.monotonic()
            if now > startup_deadline and not any(w.ready for w in self._workers):
                raise RuntimeError("no verifier worker started within 60 s")
            deadlines = [w.deadline for w in pending if w.item is not None]
            ready = wait(pending, timeout=max(0.0, min(deadlines) - now) if deadlines else 0.5)
            for w in pending:
                if w in ready:
                    lines = w.read_lines()
                    if lines is None:  # EOF: the worker died (segfault, killed by the OS) or never started
                        if not w.ready:
                            self._startup_failures += 1
                            if self._startup_failures >= 3:
                                raise RuntimeError("verifier worker processes exit during start-up; check that "
                                                   f"`{sys.executable} -m zerotir.reward.verify_worker 0` runs")
                        if w.item is not None:
                            out[keys[w.item]] = VerifyResult(
                                False, error=f"verifier worker crashed (exit {w.proc.poll()})")
                        w.item = None
                        self._replace(w)
                        continue
                    for line in lines:
                        msg = json.loads(line)
                        if msg.get("ready"):
                            w.ready = True
                            self._startup_failures = 0
                        elif w.item is not None:
                            out[keys[w.item]] = VerifyResult(bool(msg["correct"]), False, msg.get("error"))
                            w.item = None
                elif w.item is not None and time.monotonic() >= w.deadline and not self._extend(w):
                    out[keys[w.item]] = VerifyResult(False, timed_out=True,
                                                     error=f"timed out after {self.timeout_s:g}s")
                    self.timeouts += 1
                    w.item = None
                    self._replace(w)
        return out
