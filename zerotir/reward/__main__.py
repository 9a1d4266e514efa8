"""Check one response against a gold answer with the training reward's extraction and verifier:

    python -m zerotir.reward "so the answer is \\boxed{\\frac{1}{2}}" "0.5"
    python -m zerotir.reward --format answer_tag "<answer>3</answer>" "3"
"""

from __future__ import annotations

import argparse
import json
import time

from zerotir.reward.extract import ANSWER_FORMATS, extract_answer
from zerotir.reward.verifier import Verifier


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m zerotir.reward", description=__doc__.splitlines()[0])
    ap.add_argument("response", help="model response text (the final answer is extracted from it)")
    ap.add_argument("gold", help="gold answer (LaTeX allowed)")
    ap.add_argument("--format", default="boxed", choices=ANSWER_FORMATS, help="where the final answer is read")
    ap.add_argument("--timeout", type=float, default=1.0, help="per-item verification limit in seconds")
    a = ap.parse_args()
    answer = extract_answer(a.response, a.format)
    t0 = time.perf_counter()
    out: dict = {"answer": answer, "correct": False, "timed_out": False, "error": None}
    if answer is not None:
        with Verifier(workers=1, timeout_s=a.timeout, spare=False) as v:
            r = v.verify_many([(answer, a.gold)])[0]
        out.update(correct=r.correct, timed_out=r.timed_out, error=r.error)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
