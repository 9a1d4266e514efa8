"""`ThreadTuner`: the HF engine's measured choice of torch's CPU thread count (see `zerotir.rollout.hf_engine`)."""

from __future__ import annotations



class ThreadTuner:
    """Chooses torch's intra-op thread count for CPU engine steps by measuring, and re-measures as load changes.

    Why: for small models, two threads decode ~1.5x faster than one on an idle 2-core machine, but up to 10x slower
    when other processes hold the cores (OpenMP threads wait on each other). Neither fixed choice fits a shared CPU.

    A probe: the candidates take turns (interleaved, so drifting load and batch size hit all alike) for
    `warm + probe_steps` decode-only steps each; the first `warm` of each are dropped (thread pool start, new
    kernels, cache growth: measured up to 50x slower), and the lowest median seconds per row wins. Steps that also
    prefill run but are not measured (their cost is not comparable). The next probe comes `every` steps later; each
    probe that confirms the choice doubles the interval (up to `max_every`), so a settled machine pays little.
    Thread count changes how fast, and what is computed only at float rounding (the summation order: log-probs move
    ~1e-6), which is enough to make two runs of one seed drift apart; `rollout.deterministic` fixes the count.
    """

    def __init__(self, candidates: list[int], probe_steps: int = 3, every: int = 128, max_every: int = 2048):
        self.candidates = sorted(set(candidates))
        self.probe_steps = probe_steps
        self.every = self.interval = every
        self.max_every = max_every
        self.best = self.candidates[0]
        self.probes = 0
        self._schedule: list[int] = []
        self._samples: dict[int, list[float]] = {}
        self._warm = 0
        self._since_probe = 0
        self._start_probe(warm=2)

    def _start_probe(self, warm: int) -> None:
        self._warm = warm
        self._schedule = self.candidates * (warm + self.probe_steps) if len(self.candidates) > 1 else []
        self._samples = {c: [] for c in self.candidates}
        self._since_probe = 0

    @property
    def probing(self) -> bool:
        return bool(self._schedule)

    def threads(self) -> int:
        """Thread count for the next step."""
        return self._schedule[0] if self._schedule else self.best

    def record(self, threads: int, seconds: float, rows: int, decode_only: bool) -> None:
        """Report a finished step run with `threads` (seconds of wall time, rows decoded)."""
        if not self._schedule:
            self._since_probe += 1
            if self._since_probe >= self.interval and len(self.candidates) > 1:
                self._start_probe(warm=1)
            return
        if not (decode_only and rows > 0 and threads == self._schedule[0]):
            return
        self._samples[threads].append(seconds / rows)
        self._schedule.pop(0)
        if self._schedule:
            return
        med = {}
        for c, v in self._samples.items():
            kept = sorted(v[self._warm:])
            med[c] = kept[len(kept) // 2]
        best = min(med, key=med.get)
        self.interval = min(2 * self.interval, self.max_every) if self.probes and best == self.best else self.every
        self.best = best
        self.probes += 1
