"""ThreadTuner: picks the thread count with the lowest median seconds per row, drops warm-up steps, ignores prefill
steps, re-probes with a growing interval. Synthetic timings (no clock); plus one engine check that the choice does
not change what is generated."""

from zerotir.rollout.engine import GenerationRequest, SamplingParams
from zerotir.rollout.hf_engine import HFEngine
from zerotir.rollout.threads import ThreadTuner


def drive(tuner, cost, steps, rows=8, decode_only=True):
    """Run `steps` steps where a step with t threads takes cost(t, i) seconds per row."""
    used = []
    for i in range(steps):
        t = tuner.threads()
        used.append(t)
        tuner.record(t, cost(t, i) * rows, rows, decode_only)
    return used


def test_picks_the_faster_count_and_drops_warmup():
    tuner = ThreadTuner([1, 2], probe_steps=3, every=10)
    assert tuner.probing
    # 2 threads: 50x slower on its first two (warm-up) steps, then 0.6 vs 1.0
    cost = lambda t, i: (50.0 if i < 4 and t == 2 else (0.6 if t == 2 else 1.0))   # noqa: E731
    used = drive(tuner, cost, 10)
    assert used == [1, 2] * 5          # interleaved probe: (2 warm + 3) steps each
    assert not tuner.probing and tuner.best == 2


def test_loaded_machine_picks_one_thread():
    tuner = ThreadTuner([1, 2], probe_steps=3)
    drive(tuner, lambda t, i: 10.0 if t == 2 else 1.0, 10)
    assert tuner.best == 1 and tuner.threads() == 1


def test_prefill_steps_do_not_count():
    tuner = ThreadTuner([1, 2], probe_steps=1)
    drive(tuner, lambda t, i: 1.0, 5, decode_only=False)
    assert tuner.probing and tuner.threads() == 1       # the schedule has not moved
    drive(tuner, lambda t, i: 0.5 if t == 2 else 1.0, 6)
    assert not tuner.probing and tuner.best == 2


def test_reprobes_double_the_interval_while_the_choice_holds_and_reset_on_change():
    tuner = ThreadTuner([1, 2], probe_steps=1, every=4, max_every=16)
    fast2 = lambda t, i: 0.5 if t == 2 else 1.0   # noqa: E731
    drive(tuner, fast2, 6)                          # first probe: 2 x (2 warm + 1)
    assert tuner.best == 2 and tuner.interval == 4
    drive(tuner, fast2, 4)                          # 4 settled steps → a new probe starts
    assert tuner.probing
    drive(tuner, fast2, 4)                          # re-probe: 2 x (1 warm + 1), same answer → interval doubles
    assert not tuner.probing and tuner.interval == 8
    drive(tuner, fast2, 8 + 4)
    assert tuner.interval == 16
    drive(tuner, lambda t, i: 3.0 if t == 2 else 1.0, 16 + 4)   # load arrives: the next probe switches to 1
    assert tuner.best == 1 and tuner.interval == 4


def test_one_candidate_never_probes():
    tuner = ThreadTuner([2, 2])
    assert not tuner.probing and tuner.threads() == 2
    drive(tuner, lambda t, i: 1.0, 1000)
    assert not tuner.probing


def test_engine_output_does_not_depend_on_the_thread_choice(tiny_model):
    model, tok = tiny_model
    ctx = tok.encode("Question: What is 12 * 34? Let me compute")

    def run(threads):
        eng = HFEngine(model, tok, max_batch=4, cpu_threads=threads)
        reqs = [GenerationRequest(f"r{i}", ctx, SamplingParams(max_new_tokens=20, seed=i)) for i in range(4)]
        return eng, [(o.token_ids, o.raw_logprobs) for o in eng.generate(reqs)]

    tuned, a = run(None)
    assert tuned.thread_tuner is not None
    _, b = run(1)
    assert a == b
