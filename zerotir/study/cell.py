"""One study cell in its own process: `python -m zerotir.study.cell RUN_DIR --threads K`.

Runs `zerotir.train.loop.train` on RUN_DIR/config.yaml (written by the study) with `resume=RUN_DIR`: from the newest
checkpoint when there is one, from step 0 otherwise (the loop then trims any rows a killed attempt left behind).
An exclusive lock on RUN_DIR/.lock (released by the kernel when the process dies, however it dies) makes a second
process on the same run dir fail at once instead of interleaving writes with the first.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
from pathlib import Path

LOCK_FILE = ".lock"
EXIT_LOCKED = 75  # EX_TEMPFAIL: another process holds the run dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zerotir.study.cell")
    ap.add_argument("run_dir")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    args = ap.parse_args(argv)
    run = Path(args.run_dir)
    lock = open(run / LOCK_FILE, "w")  # held (and locked) for the life of the process
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"error: run dir {run} is in use by another process", file=sys.stderr)
        return EXIT_LOCKED
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from zerotir.config import load_config
    from zerotir.train.loop import train

    cfg = load_config(run / "config.yaml")
    print(f"study cell {run.name}: pid {os.getpid()}, {torch.get_num_threads()} torch threads", flush=True)
    train(cfg, resume=str(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
