"""LLM-shaped load, in process: envelope version 2, chunks matched into streams, the formulas on hand-made streams,
objectives / goodput / attainment, seeded length distributions, the SLOs on the new names, the llm-synthetic engine.
"""

from __future__ import annotations

import statistics
import threading

import pytest
from hdrh.histogram import HdrHistogram

from loadgen.envelope import (
    Chunk,
    Malformed,
    Reply,
    Request,
    RequestTemplate,
    Stamps,
    decode_reply,
    decode_request,
    encode_chunk,
    encode_request,
)
from loadgen.errors import ModelError, PlanError, SloError
from loadgen.results.objectives import Objectives, parse_objective
from loadgen.results.slo import judge, parse_slo
from loadgen.results.summary import build_summary
from loadgen.run.engine import Engine, RunResult, _Pending
from loadgen.run.llm_load import llm_load, parse_lengths
from loadgen.run.schedules import Constant
from loadgen.run.spec import RunSpec
from loadgen.transports import open_transport
from loadgen.worker.models import load_model
from loadgen.worker.models.llm_synthetic import LlmSyntheticModel, StepOutput
from probes.urls import parse_broker_url

MS = 1_000_000  # ns
STAMPS = Stamps(10, 20, 30, 40, 50)


# -- envelope version 2 -------------------------------------------------------------------------------------------

def test_chunks_round_trip_and_version_1_still_decodes() -> None:
    first = Chunk("r", 3, 0, 1, False, "w-1", "cpu", 4, STAMPS)
    middle = Chunk("r", 3, 1, 8, False, "w-1", "cpu", 5)
    final = Chunk("r", 3, 2, 7, True, "w-1", "cuda:0", 2, STAMPS, model="llm-synthetic, batch ≤ 16")
    failed = Chunk("r", 4, 0, 0, True, "w-1", "cpu", 1, STAMPS, error="model error: boom")
    for chunk in (first, middle, final, failed):
        assert decode_reply(encode_chunk(chunk)) == chunk
    assert b'"v":2' in encode_chunk(middle) and b"stamps" not in encode_chunk(middle)
    # version 1, as an older worker writes it, byte for byte
    old = (b'{"v":1,"t":"rep","run":"r","seq":1,"worker":"w","device":"cpu","batch_size":4,'
           b'"stamps":[1,2,3,4,5],"output":[1]}')
    assert decode_reply(old) == Reply("r", 1, "w", "cpu", 4, Stamps(1, 2, 3, 4, 5), output=[1])
    old_req = (b'{"v":1,"t":"req","run":"r","seq":2,"intended_ns":1,"sent_ns":2,"reply_to":"x","workload":"w",'
               b'"payload":"p"}')
    assert decode_request(old_req) == Request("r", 2, 1, 2, "x", "w", "p")
    # a whole reply written as version 2 decodes too; a chunk must be version 2
    assert isinstance(decode_reply(old.replace(b'"v":1', b'"v":2')), Reply)
    as_v1 = decode_reply(encode_chunk(middle).replace(b'"v":2', b'"v":1'))
    assert isinstance(as_v1, Malformed) and "version 2" in as_v1.reason


def test_llm_requests_carry_their_lengths_and_the_template_writes_the_same_bytes() -> None:
    req = Request("r", 9, 100, 105, "reply", "chat", "hello", input_tokens=512, max_tokens=64)
    assert decode_request(encode_request(req)) == req
    template = RequestTemplate("r", "reply", "chat", "hello")
    assert template.encode_llm(9, 100, 105, 512, 64) == encode_request(req)
    assert template.encode_llm(9, 100, 105, 0, 0) == encode_request(req._replace(input_tokens=0, max_tokens=0))
    assert b"input_tokens" not in template.encode(9, 100, 105)


@pytest.mark.parametrize(("raw", "reason"), [
    (b'{"v":2,"t":"chunk","run":"r","seq":1,"i":-1,"n":1,"final":true,"worker":"w","device":"c","batch_size":1}',
     "fields 'i' and 'n' must not be negative"),
    (b'{"v":2,"t":"chunk","run":"r","seq":1,"i":0,"n":1,"final":1,"worker":"w","device":"c","batch_size":1}',
     "field 'final' has the wrong type"),
    (b'{"v":2,"t":"chunk","run":"r","seq":1,"i":0,"n":1,"final":true,"worker":"w","device":"c","batch_size":1,'
     b'"stamps":[1,2]}', "field 'stamps' must hold five integers"),
    (b'{"v":2,"t":"chunk","run":"r","seq":1}', "missing field 'i'"),
])
def test_malformed_chunks_come_back_with_a_reason(raw: bytes, reason: str) -> None:
    got = decode_reply(raw)
    assert isinstance(got, Malformed) and got.reason.startswith(reason), got


# -- chunks matched into streams, the formulas on hand-made streams -------------------------------------------------

def _engine(objectives: list[str] | None = None, timeout_s: float = 1.0) -> Engine:
    spec = RunSpec(queue="q", schedule=Constant(10), duration_s=1.0, timeout_s=timeout_s, run_id="run")
    llm = llm_load("fixed:100", "uniform:1,10", objectives or [], 1)
    engine = Engine(open_transport(parse_broker_url("memory://t"), "q", "run"), spec, llm=llm)
    engine.result = RunResult(spec=spec, recorder=engine.recorder, started_epoch_s=0.0, measured_s=2.0)
    return engine


def _expect(engine: Engine, seq: int, intended_ns: int, sent_ns: int, input_tokens: int = 100) -> None:
    engine._seq = max(engine._seq, seq)
    engine.pending[seq] = _Pending(intended_ns, sent_ns, False, input_tokens=input_tokens)
    engine.recorder.record_sent()


def _chunk(engine: Engine, seq: int, part: int, tokens: int, final: bool, at_ns: int, stamps: bool = False) -> None:
    engine._on_reply(encode_chunk(Chunk("run", seq, part, tokens, final, "w", "cpu", 1,
                                        STAMPS if stamps or final or part == 0 else None)), at_ns)


def _values(hist: HdrHistogram) -> list[int]:
    return [it.value_iterated_to for it in hist.get_recorded_iterator() for _ in range(it.count_at_value_iterated_to)]


def _same(hist: HdrHistogram, expected_us: list[float]) -> bool:
    got = _values(hist)
    return len(got) == len(expected_us) and all(hist.values_are_equivalent(g, round(e))
                                                for g, e in zip(got, sorted(expected_us), strict=True))


def test_streams_in_order_out_of_order_duplicated_cut_and_late() -> None:
    engine = _engine()
    rec = engine.recorder
    # A: in order, intended at 0, sent at 1 ms; chunks at 100, 140, 180 ms carrying 1 + 4 + 3 tokens
    _expect(engine, 1, 0, 1 * MS)
    _chunk(engine, 1, 0, 1, False, 100 * MS)
    _chunk(engine, 1, 1, 4, False, 140 * MS)
    _chunk(engine, 1, 1, 4, False, 141 * MS)  # a repeated chunk: a duplicate, not a gap nor tokens
    _chunk(engine, 1, 2, 3, True, 180 * MS)
    # B: out of order (final first): complete on the third arrival; its TTFT is the first arrival
    _expect(engine, 2, 1000 * MS, 1000 * MS)
    _chunk(engine, 2, 2, 2, True, 1050 * MS)
    _chunk(engine, 2, 0, 1, False, 1060 * MS)
    assert 2 in engine.pending
    _chunk(engine, 2, 1, 2, False, 1090 * MS)
    # C: cut by the timeout after its first chunk; D: nothing at all
    _expect(engine, 3, 2000 * MS, 2000 * MS)
    _chunk(engine, 3, 0, 1, False, 2020 * MS)
    _expect(engine, 4, 2100 * MS, 2105 * MS)
    engine._expire(10_000 * MS)
    _chunk(engine, 3, 1, 5, True, 10_001 * MS)  # C's final after the timeout: late
    _chunk(engine, 1, 2, 3, True, 10_002 * MS)  # A's final again: a duplicate
    rec.flush()
    rec.roll(0.0, 11.0)
    t = rec.total
    assert rec.streams == 2 and rec.replied == 2 and rec.timeouts == 2
    assert rec.duplicates == 2 and rec.late == 1 and engine.result is not None and engine.result.foreign == 0
    assert (rec.streams_cut, rec.cut_tokens) == (1, 1)
    assert rec.output_tokens == 8 + 5 + 1  # every measured chunk's tokens, C's first included
    timeout_us = 1_000_000
    # TTFT: A 100 ms, B 50 ms, C 20 ms; D no chunk: at least the timeout from its intended send (5 ms before)
    assert _same(t["ttft"], [100_000, 50_000, 20_000, 5_000 + timeout_us])
    assert _same(t["ttft_uncorrected"], [99_000, 50_000, 20_000, timeout_us])
    assert rec.timeouts_by_stage["ttft"] == 1
    # ITL: every gap between arrivals (A 40, 40; B 10, 30)
    assert _same(t["itl"], [40_000, 40_000, 10_000, 30_000])
    # TPOT = (last − first) / (N − 1): A (180 − 100) / 7, B (1090 − 1050) / 4
    assert _same(t["tpot"], [80_000 / 7, 40_000 / 4])
    assert _same(t["output_tokens"], [8, 5]) and _same(t["input_tokens"], [100, 100])
    # E2E (the end_to_end stage): A 180 ms, B 90 ms; the timeouts at no less than the timeout from intended
    assert _same(t["end_to_end"], [180_000, 90_000, timeout_us, 5_000 + timeout_us])


def test_an_empty_final_chunk_is_no_gap_and_tpot_ends_at_the_last_token() -> None:
    """A generator-function model learns its stream ended only on the next step: the empty final chunk comes a
    step after the last token. It ends the stream (e2e) but is neither a gap nor part of TPOT."""
    engine = _engine()
    _expect(engine, 1, 0, 0)
    _chunk(engine, 1, 0, 1, False, 10 * MS)
    _chunk(engine, 1, 1, 1, False, 20 * MS)
    _chunk(engine, 1, 2, 1, False, 30 * MS)
    _chunk(engine, 1, 3, 0, True, 40 * MS)
    rec = engine.recorder
    rec.flush()
    rec.roll(0.0, 1.0)
    t = rec.total
    assert rec.streams == 1 and rec.output_tokens == 3
    assert _same(t["itl"], [10_000, 10_000])
    assert _same(t["tpot"], [10_000])  # (30 − 10) / 2, not (40 − 10) / 2
    assert _same(t["end_to_end"], [40_000])


def test_one_token_stream_has_no_tpot_and_an_error_stream_is_an_error() -> None:
    engine = _engine()
    _expect(engine, 1, 0, 0)
    _chunk(engine, 1, 0, 1, True, 30 * MS)
    _expect(engine, 2, 0, 0)
    engine._on_reply(encode_chunk(Chunk("run", 2, 0, 0, True, "w", "cpu", 1, STAMPS, error="boom")), 40 * MS)
    rec = engine.recorder
    rec.roll(0.0, 1.0)
    assert rec.total["tpot"].get_total_count() == 0 and rec.total["ttft"].get_total_count() == 2
    assert rec.streams == 1 and rec.errors["worker_error"] == 1


def test_objectives_goodput_and_attainment() -> None:
    engine = _engine(["ttft<100ms", "tpot<=20ms"])
    # 1 meets both; 2 misses TTFT; 3 misses TPOT; 4 times out; 5 meets (one token: no TPOT to judge)
    for seq, ttft, last, tokens in ((1, 50, 130, 5), (2, 150, 200, 5), (3, 10, 200, 5), (5, 99, 99, 1)):
        _expect(engine, seq, 0, 0)
        if tokens == 1:
            _chunk(engine, seq, 0, 1, True, ttft * MS)
        else:
            _chunk(engine, seq, 0, 1, False, ttft * MS)
            _chunk(engine, seq, 1, tokens - 1, True, last * MS)
    _expect(engine, 4, 0, 0)
    engine._expire(5000 * MS)
    assert engine.recorder.met == 2
    assert engine.result is not None
    engine.recorder.roll(0.0, 5.0)
    summary = build_summary(engine.result.record(broker="memory://t", broker_kind="memory"))
    llm = summary["llm"]
    assert llm["attainment"]["value"] == pytest.approx(40.0) and llm["attainment"]["judged"] == 5
    assert llm["goodput"]["value"] == pytest.approx(1.0)  # 2 met in the 2 s measured
    assert llm["objectives"] == ["ttft<100ms", "tpot<=20ms"]
    for name in ("ttft", "tpot", "itl", "e2e", "input_tokens", "output_tokens", "goodput", "attainment",
                 "output_tokens_per_s", "requests_per_s"):
        assert llm[name]["formula"], name
    assert llm["ttft"]["count"] == 5 and llm["ttft"]["p50_ms"] > 0
    assert llm["output_tokens"]["count"] == 4 and llm["output_tokens"]["max"] == 5
    assert llm["output_tokens_per_s"]["value"] == pytest.approx((5 + 5 + 5 + 1) / 2)
    assert judge(summary, parse_slo("attainment>=40%")).ok and not judge(summary, parse_slo("attainment>=99%")).ok
    assert judge(summary, parse_slo("goodput>=1/s")).ok and not judge(summary, parse_slo("goodput>=20/s")).ok
    assert judge(summary, parse_slo("ttft.p99<5s")).ok and not judge(summary, parse_slo("ttft.p50<1ms")).ok
    assert judge(summary, parse_slo("e2e.p50<5s")).ok and judge(summary, parse_slo("tpot.p90<50ms")).ok


def test_objective_and_slo_parsing() -> None:
    assert parse_objective("ttft<500ms").threshold_us == 500_000
    assert parse_objective("tpot <= 50 ms").inclusive
    objectives = Objectives.parse(["ttft<100ms", "itl<=20ms"])
    assert objectives.met(99_999, None, 20_000, 1) and not objectives.met(100_000, None, None, 1)
    assert not objectives.met(1, 5, 20_001, 1)
    for bad in ("ttft>500ms", "ttft<500", "speed<5ms", "ttft<0ms"):
        with pytest.raises(SloError):
            parse_objective(bad)
    assert parse_slo("e2e.p99<1s").stage == "end_to_end" and parse_slo("ttft.p99<500ms").stage == "ttft"
    assert parse_slo("goodput>=20/s").threshold == 20 and parse_slo("attainment>=99%").threshold == 0.99
    for bad in ("attainment>=99", "goodput>=20ms", "ttfx.p99<1s"):
        with pytest.raises(SloError):
            parse_slo(bad)
    summary_without_streams = {"counts": {"sent": 1}, "stages": {}, "rates": {}}
    assert not judge(summary_without_streams, parse_slo("attainment>=1%")).ok


# -- length distributions ------------------------------------------------------------------------------------------

def test_lengths_are_seeded_and_in_range() -> None:
    def draw(seed: int, inp: str, out: str, n: int = 2000) -> list[tuple[int, int]]:
        load = llm_load(inp, out, [], seed)
        assert load is not None
        return [load.next_lengths() for _ in range(n)]

    a = draw(7, "normal:512,128", "uniform:64,256")
    assert a == draw(7, "normal:512,128", "uniform:64,256")
    assert a != draw(8, "normal:512,128", "uniform:64,256")
    inputs, outputs = [x for x, _ in a], [y for _, y in a]
    assert abs(statistics.fmean(inputs) - 512) < 12 and abs(statistics.stdev(inputs) - 128) < 10
    assert min(outputs) >= 64 and max(outputs) <= 256 and len(set(outputs)) > 150
    assert {x for x, _ in draw(1, "300", "fixed:5", 50)} == {300}
    assert min(x for x, _ in draw(1, "normal:2,50", "1", 500)) >= 1  # held to at least one token
    no_lengths = llm_load(None, None, ["ttft<1s"], 1)
    assert no_lengths is not None and no_lengths.next_lengths() == (0, 0)
    assert llm_load(None, None, [], 1) is None
    for bad in ("gamma:1,2", "uniform:5", "uniform:9,3", "fixed:0", "fixed:1.5", "normal:a,b", "normal:0,1"):
        with pytest.raises(PlanError):
            parse_lengths(bad, "--input-tokens")


# -- the llm-synthetic engine ------------------------------------------------------------------------------------------

def _serve(model: LlmSyntheticModel, requests: list[tuple[int, int, int]]) -> list[StepOutput]:
    steps: list[StepOutput] = []
    finished = threading.Event()
    remaining = {key for key, _i, _o in requests}

    def emit(step: StepOutput) -> None:
        steps.append(step)
        for ev in step.events:
            if ev.final:
                remaining.discard(ev.key)
        if not remaining:
            finished.set()

    model.start(emit)
    try:
        for key, n_in, n_out in requests:
            model.submit(key, n_in, n_out)
        assert finished.wait(30)
    finally:
        model.close()
    return steps


def test_llm_synthetic_chunks_batches_and_kv_budget() -> None:
    model = load_model("llm-synthetic:step_ms=1,per_seq_ms=0,prefill_ms=0,chunk=3,kv_tokens=300")
    assert isinstance(model, LlmSyntheticModel) and model.streaming
    # two requests of 100 + 7 tokens fit the budget together; a third of 100 + 100 waits for room
    steps = _serve(model, [(1, 100, 7), (2, 100, 7), (3, 100, 100)])
    tokens = {k: [ev.tokens for s in steps for ev in s.events if ev.key == k] for k in (1, 2, 3)}
    assert tokens[1] == [1, 3, 3]  # the first token at once, then every 3, the rest in the final chunk
    assert sum(tokens[3]) == 100 and tokens[3][0] == 1
    firsts = {ev.key: i for i, s in enumerate(steps) for ev in s.events if ev.first}
    lasts = {ev.key: i for i, s in enumerate(steps) for ev in s.events if ev.final}
    assert firsts[1] == 0 and firsts[2] <= 1  # each joins at the next step boundary
    assert firsts[3] == max(lasts[1], lasts[2]) + 1  # the KV budget held it back until both were done
    assert max(s.batch for s in steps) == 2


def test_llm_synthetic_step_curve_and_parameters() -> None:
    model = load_model("llm-synthetic:step_ms=10,per_seq_ms=0.5,prefill_ms=0.02")
    assert isinstance(model, LlmSyntheticModel)
    assert model.step_ms_for(4, 1000) == pytest.approx(10 + 2 + 20)
    default = load_model("llm-synthetic")
    assert isinstance(default, LlmSyntheticModel) and default.chunk == 1 and default.output_tokens > 0
    for bad in ("llm-synthetic:chunk=0", "llm-synthetic:step_ms=-1", "llm-synthetic:speed=3",
                "llm-synthetic:kv_tokens=x"):
        with pytest.raises(ModelError):
            load_model(bad)
    with pytest.raises(ModelError):
        default.infer(["x"])


def test_llm_synthetic_takes_no_more_while_the_kv_budget_holds_one_back() -> None:
    model = LlmSyntheticModel(kv_tokens=300, max_seqs=4)
    assert model.room() == 4
    model.submit(1, 100, 100)
    model.submit(2, 100, 100)
    assert model.room() == 2  # both waiting for the next step boundary
    model._admit(0)  # the boundary: the first fits (200 of 300), the second (another 200) does not
    assert model.held() == 2 and model.room() == 0
