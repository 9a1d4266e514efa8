"""A scripted engine: emits given token streams one token per step, with HFEngine's stop rules (EOS, stop strings,
python-block close, max_new_tokens). Used to test the TIR loop deterministically; the sandbox stays real."""

from __future__ import annotations

import re

from zerotir.rollout.engine import GenerationOutput, GenerationRequest
from zerotir.rollout.textstream import IncrementalDetokenizer, StopMatcher


def stream_logprob(i: int) -> tuple[float, float]:
    """(logprob, raw logprob) the scripted engine reports for stream position i — distinct, so alignment shows."""
    return -(i + 1) / 1000.0, -(i + 1) / 100.0


class ScriptedEngine:
    def __init__(self, tokenizer, streams: dict[tuple[int, int], list[int]], version: int = 7):
        self.tokenizer = tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        self.streams = streams
        self.pos = {k: 0 for k in streams}
        self.active: list[dict] = []
        self.contexts: list[list[int]] = []
        self._version = version

    def add_request(self, request: GenerationRequest) -> None:
        g, s = map(int, re.match(r"g(\d+)-s(\d+)-", request.request_id).groups())
        self.contexts.append(list(request.context_ids))
        p = request.params
        self.active.append(dict(req=request, key=(g, s), out=[], lps=[], raws=[],
                                detok=IncrementalDetokenizer(self.tokenizer, request.context_ids[-4:]),
                                matcher=StopMatcher(p.stop_strings, p.stop_at_code_block)))

    def has_unfinished(self) -> bool:
        return bool(self.active)

    def step(self) -> list[GenerationOutput]:
        done, keep = [], []
        for a in self.active:
            stream, i = self.streams[a["key"]], self.pos[a["key"]]
            tok = stream[i] if i < len(stream) else self.eos_token_id
            self.pos[a["key"]] = i + 1
            lp, raw = stream_logprob(i)
            a["out"].append(tok)
            a["lps"].append(lp)
            a["raws"].append(raw)
            reason, stop = None, None
            if tok == self.eos_token_id:
                reason = "eos"
            else:
                if a["detok"].add(tok):
                    stop = a["matcher"].feed(a["detok"].text)
                if stop is not None:
                    reason = "stop"
                elif len(a["out"]) >= a["req"].params.max_new_tokens:
                    reason = "length"
            if reason:
                done.append(GenerationOutput(a["req"].request_id, a["out"], a["lps"], a["raws"], reason, stop))
            else:
                keep.append(a)
        self.active = keep
        return done

    def abort(self, request_id: str) -> None:
        self.active = [a for a in self.active if a["req"].request_id != request_id]

    def generate(self, requests):
        raise NotImplementedError

    def update_weights(self, state_dict, version: int) -> None:
        self._version = version

    @property
    def policy_version(self) -> int:
        return self._version
