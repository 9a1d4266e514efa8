"""Property tests of the TIR loop: scripted engine (exact token streams) + the real sandbox + two real tokenizers.

Over random texts, tool outputs and budgets: ids = prompt ‖ response; decode(response) is the transcript of the
segments; mask is 1 exactly on sampled tokens, which are the scripted stream in order (never re-encoded); log-probs
align; no budget is exceeded; each executed call's output block appears exactly once, tokenized on its own; calls
beyond the tool budget are never executed.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from scripted import ScriptedEngine, stream_logprob

from zerotir.config import RolloutConfig
from zerotir.rollout.format import CODE_CLOSE, CODE_OPEN, OUTPUT_OPEN, TRUNCATION_MARKER, format_tool_output
from zerotir.rollout.templates import encode_prompt
from zerotir.rollout.tir import rollout, tokenize_block
from zerotir.types import Problem

TEXT = st.text(alphabet="abcxyz019 +=*.,\n\té世", max_size=40)
OUTPUT = st.tuples(st.text(alphabet="abcz0189 -_.,:\n\té世√", max_size=40), st.integers(1, 12))
"""(text, repeat): the code prints text * repeat, so long outputs come from short code."""


class CountingSandbox:
    """The real sandbox, counting executions (to prove skipped calls never run)."""

    def __init__(self, sb):
        self.sb, self.calls = sb, 0

    async def arun(self, code):
        self.calls += 1
        return await self.sb.arun(code)

    def session(self):
        outer, inner = self, self.sb.session()

        class _S:
            async def arun(self, code):
                outer.calls += 1
                return await inner.arun(code)

            def close(self):
                inner.close()
        return _S()


@st.composite
def scripts(draw):
    """One trajectory script: turns of (text, printed output | None), then a final text."""
    turns = draw(st.lists(st.tuples(TEXT, OUTPUT), max_size=3))
    return turns, draw(TEXT)


def build_stream(tok, turns, final) -> tuple[list[int], list[str]]:
    """Token stream the model 'samples': each turn tokenized on its own (so turns end on token boundaries)."""
    ids, codes = [], []
    for text, out in turns:
        code = f"print({out[0]!r} * {out[1]}, end='')"
        codes.append(code)
        ids += tok.encode(f"{text}{CODE_OPEN}{code}{CODE_CLOSE}", add_special_tokens=False)
    ids += tok.encode(final, add_special_tokens=False)
    return ids, codes


def check_trajectory(t, tok, cfg, stream, turns, codes, max_tool_calls, prompt_ids):
    t.validate()
    n = len(t.response_ids)
    assert t.prompt_ids == prompt_ids
    # budgets
    assert n <= cfg.max_total_tokens
    for s in t.segments:
        if s.kind == "model":
            assert s.end - s.start <= cfg.max_new_tokens_per_turn
    # sampled tokens are the stream, in order, with their own log-probs; mask 1 exactly there
    sampled = [i for i, m in enumerate(t.loss_mask) if m == 1]
    got = [t.response_ids[i] for i in sampled]
    assert got == (stream + [tok.eos_token_id])[:len(got)]
    assert [t.logprobs[i] for i in sampled] == [stream_logprob(j)[0] for j in range(len(got))]
    assert [t.raw_logprobs[i] for i in sampled] == [stream_logprob(j)[1] for j in range(len(got))]
    model_pos = {i for s in t.segments if s.kind == "model" for i in range(s.start, s.end)}
    assert set(sampled) == model_pos
    # transcript: decode(response) == the segments' texts in order
    pieces = [tok.decode(t.response_ids[s.start:s.end], skip_special_tokens=True) for s in t.segments]
    assert tok.decode(t.response_ids, skip_special_tokens=True) == "".join(pieces) == t.response_text
    # tool calls
    executed = [c for c in t.tool_calls if c.executed]
    assert len(executed) <= max_tool_calls
    assert all(not c.executed and c.status == "skipped" for c in t.tool_calls[len(executed):])
    tool_segs = [k for k, s in enumerate(t.segments) if s.kind == "tool"]
    used = [c.output_segment for c in t.tool_calls if c.output_segment is not None]
    assert sorted(used) == tool_segs and len(set(used)) == len(used)  # each block once, owned by one call
    for i, c in enumerate(t.tool_calls):
        assert c.code == codes[i]
        if c.output_segment is None:
            continue
        s = t.segments[c.output_segment]
        block = t.response_ids[s.start:s.end]
        assert block == tok.encode(format_tool_output(c.output), add_special_tokens=False)  # tokenized on its own
        assert c.output_tokens == len(block)
        assert len(tok.encode(c.output, add_special_tokens=False)) <= cfg.max_tool_output_tokens
        assert tok.decode(block, skip_special_tokens=True).count(OUTPUT_OPEN) == 1
        if c.executed:
            assert c.status == "ok"
            want = (turns[i][1][0] * turns[i][1][1]).rstrip("\n")
            if c.truncated:
                assert c.output.endswith(TRUNCATION_MARKER)
                assert want.startswith(c.output[:-len(TRUNCATION_MARKER)])
            else:
                assert c.output == want
        else:
            assert c.output == cfg.tool_budget_message or c.truncated
    # finish reasons
    if t.finish_reason == "eos":
        assert t.response_ids[-1] == tok.eos_token_id and len(got) == len(stream) + 1
    elif t.finish_reason == "length":
        last_model = max((s for s in t.segments if s.kind == "model"), key=lambda s: s.start)
        no_room = tokenize_block(tok, "", cfg.max_tool_output_tokens, cfg.max_total_tokens - n, True) is None
        assert n == cfg.max_total_tokens or last_model.end - last_model.start == cfg.max_new_tokens_per_turn \
            or no_room


@pytest.mark.parametrize("which", ["tiny_tok", "smol_tok"])
def test_tir_loop_properties(which, request, sandbox):
    tok = request.getfixturevalue(which)
    seen = {"executed": 0, "skipped": 0, "truncated": 0, "length": 0, "eos": 0}

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @seed(20261123)  # fixed, so the coverage check below is reproducible
    @given(scripts=st.lists(scripts(), min_size=1, max_size=3), total=st.integers(8, 300),
           per_turn=st.integers(1, 80), out_tokens=st.integers(16, 48), max_calls=st.integers(0, 3),
           stateful=st.booleans(), message=st.sampled_from(["Tool call budget exhausted; the code was not run.", ""]))
    def run(scripts, total, per_turn, out_tokens, max_calls, stateful, message):
        cfg = dataclasses.replace(RolloutConfig(), template="toy", max_total_tokens=total,
                                  max_new_tokens_per_turn=per_turn, max_tool_output_tokens=out_tokens,
                                  stateful_tools=stateful, tool_budget_message=message)
        problems = [Problem(id=f"p{i}", prompt=f"What is {i}?", answer=str(i)) for i in range(len(scripts))]
        streams, codes = {}, {}
        for gi, (turns, final) in enumerate(scripts):
            streams[(gi + 5, 0)], codes[gi] = build_stream(tok, turns, final)
        engine = ScriptedEngine(tok, streams)
        counting = CountingSandbox(sandbox)
        trajs = rollout(problems, engine, counting, cfg, n_samples=1, max_tool_calls=max_calls, group_offset=5)
        assert [t.group_id for t in trajs] == [5 + i for i in range(len(scripts))]
        assert all(t.policy_version == 7 and t.sample_index == 0 for t in trajs)
        _, prompt_ids = encode_prompt("toy", "What is 0?", tok)
        for gi, t in enumerate(trajs):
            _, pids = encode_prompt("toy", problems[gi].prompt, tok)
            check_trajectory(t, tok, cfg, streams[(gi + 5, 0)], scripts[gi][0], codes[gi], max_calls, pids)
        for ctx in engine.contexts:  # every request continued prompt ‖ response exactly
            assert any(ctx[:len(t.prompt_ids)] == t.prompt_ids and
                       ctx == (t.prompt_ids + t.response_ids)[:len(ctx)] for t in trajs)
        assert counting.calls == sum(t.num_tool_calls for t in trajs)
        for t in trajs:
            seen["executed"] += t.num_tool_calls
            seen["skipped"] += sum(not c.executed for c in t.tool_calls)
            seen["truncated"] += sum(c.truncated for c in t.tool_calls)
            seen[t.finish_reason] = seen.get(t.finish_reason, 0) + 1

    run()
    assert all(seen[k] > 0 for k in ("executed", "skipped", "truncated", "length", "eos")), seen  # not vacuous


def test_stateful_vs_stateless_sessions(tiny_tok, sandbox):
    tok = tiny_tok
    turns = [("a", None), ("b", None)]
    code1, code2 = "x = 41", "print(x + 1)"
    stream = (tok.encode(f"{CODE_OPEN}{code1}{CODE_CLOSE}", add_special_tokens=False)
              + tok.encode(f"{CODE_OPEN}{code2}{CODE_CLOSE}", add_special_tokens=False))
    outs = {}
    for stateful in (True, False):
        cfg = dataclasses.replace(RolloutConfig(), template="toy", stateful_tools=stateful, max_total_tokens=400)
        eng = ScriptedEngine(tok, {(0, 0): list(stream)})
        [t] = rollout([Problem("p", "q", "1")], eng, sandbox, cfg, n_samples=1, max_tool_calls=2)
        outs[stateful] = t.tool_calls
    assert [c.status for c in outs[True]] == ["ok", "ok"] and outs[True][1].output == "42"
    assert [c.status for c in outs[False]] == ["ok", "error"] and "NameError" in outs[False][1].output
    assert turns  # two code turns were scripted


def test_budget_message_and_skipped_calls(tiny_tok, sandbox):
    tok = tiny_tok
    stream = []
    for k in range(3):
        stream += tok.encode(f"step {k}\n{CODE_OPEN}print({k}){CODE_CLOSE}", add_special_tokens=False)
    stream += tok.encode(" done", add_special_tokens=False)
    cfg = dataclasses.replace(RolloutConfig(), template="toy", max_total_tokens=500)
    counting = CountingSandbox(sandbox)
    [t] = rollout([Problem("p", "q", "1")], ScriptedEngine(tok, {(0, 0): stream}), counting, cfg, n_samples=1,
                  max_tool_calls=1)
    assert [c.status for c in t.tool_calls] == ["ok", "skipped", "skipped"]
    assert counting.calls == 1 and t.num_tool_calls == 1
    assert t.response_text.count(format_tool_output(cfg.tool_budget_message)) == 2
    assert t.response_text.count(format_tool_output("0")) == 1
    assert t.finish_reason == "eos"
    # with an empty message the trajectory stops at the first over-budget block
    cfg2 = dataclasses.replace(cfg, tool_budget_message="")
    [t2] = rollout([Problem("p", "q", "1")], ScriptedEngine(tok, {(0, 0): stream}), sandbox, cfg2, n_samples=1,
                   max_tool_calls=1)
    assert [c.status for c in t2.tool_calls] == ["ok", "skipped"] and t2.finish_reason == "stop"
    assert t2.response_text.endswith(CODE_CLOSE)


def test_truncation_marker_by_tokens(tiny_tok, sandbox):
    tok = tiny_tok
    stream = tok.encode(f"{CODE_OPEN}print('7' * 500){CODE_CLOSE}", add_special_tokens=False)
    cfg = dataclasses.replace(RolloutConfig(), template="toy", max_tool_output_tokens=20, max_total_tokens=500)
    [t] = rollout([Problem("p", "q", "1")], ScriptedEngine(tok, {(0, 0): stream}), sandbox, cfg, n_samples=1,
                  max_tool_calls=1)
    c = t.tool_calls[0]
    assert c.truncated and c.output.endswith(TRUNCATION_MARKER) and set(c.output[:-len(TRUNCATION_MARKER)]) == {"7"}
    assert len(tok.encode(c.output, add_special_tokens=False)) <= 20
    assert TRUNCATION_MARKER in t.response_text


def test_sandbox_error_is_not_shown_to_the_model(tiny_tok, sandbox):
    """A closed sandbox answers 'sandbox_error' (infrastructure); the model must never see it as its code failing."""
    tok = tiny_tok
    dead = type(sandbox)(workers=1, timeout_s=1.0, isolation=sandbox.isolation)
    dead.close()
    stream = tok.encode(f"{CODE_OPEN}print(1){CODE_CLOSE} more text", add_special_tokens=False)
    for stateful in (True, False):
        cfg = dataclasses.replace(RolloutConfig(), template="toy", stateful_tools=stateful, max_total_tokens=300)
        [t] = rollout([Problem("p", "q", "1")], ScriptedEngine(tok, {(0, 0): stream}), dead, cfg, n_samples=1,
                      max_tool_calls=2)
        assert t.sandbox_error and t.tool_calls[0].status == "sandbox_error"
        assert OUTPUT_OPEN not in t.response_text and t.num_tool_tokens == 0
        assert t.response_text.endswith(CODE_CLOSE)  # ended right there, nothing inserted


def test_code_close_as_plain_stop_string(tiny_tok, sandbox):
    """Engines without stop_at_code_block stop at every CODE_CLOSE (also the opening fence's '\\n```'): the loop
    keeps sampling until a real python block closes."""
    tok = tiny_tok
    text = f"intro\n```\nnot code\n```\nnow\n{CODE_OPEN}print(5){CODE_CLOSE}"
    stream = tok.encode(text, add_special_tokens=False) + tok.encode(" end", add_special_tokens=False)

    class PlainStops(ScriptedEngine):
        def add_request(self, request):
            request.params.stop_at_code_block = False
            request.params.stop_strings = list(request.params.stop_strings) + [CODE_CLOSE]
            super().add_request(request)

    cfg = dataclasses.replace(RolloutConfig(), template="toy", max_total_tokens=300)
    [t] = rollout([Problem("p", "q", "1")], PlainStops(tok, {(0, 0): stream}), sandbox, cfg, n_samples=1,
                  max_tool_calls=1)
    assert [c.output for c in t.tool_calls] == ["5"] and t.finish_reason == "eos"
    assert t.response_text.startswith(text + format_tool_output("5"))


def test_bad_budget_is_rejected(tiny_tok):
    cfg = dataclasses.replace(RolloutConfig(), max_tool_output_tokens=1)
    with pytest.raises(ValueError, match="max_tool_output_tokens"):
        rollout([Problem("p", "q", "1")], ScriptedEngine(tiny_tok, {(0, 0): []}), None, cfg, n_samples=1,
                max_tool_calls=1)
