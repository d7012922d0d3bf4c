"""The recorder's inlined HdrHistogram arithmetic against hdrh's own ``record_value``, value for value."""

from __future__ import annotations

import random

from loadgen.envelope import Stamps
from loadgen.results.stages import REPLY_STAGES, new_histogram
from loadgen.run.recorder import Recorder


def test_inlined_recording_matches_record_value_bit_for_bit() -> None:
    rec = Recorder()
    ref = {stage: new_histogram() for stage in (*REPLY_STAGES, "schedule_lag")}
    expected_out_of_range = dict.fromkeys(ref, 0)
    expected_clamped, expected_skewed = dict.fromkeys(ref, 0), dict.fromkeys(ref, 0)
    rnd = random.Random(7)
    for _ in range(20_000):
        # µs from 0 to beyond the 1 h ceiling, and negative stages (clock skew), so every branch is taken; and
        # ns values past 2**53 µs (where the bulk path's float exponent is no longer exact) and past 64 bits (a
        # hostile stamp: the bulk buffer cannot hold it, that reply is recorded one value at a time).
        e2e, unc, queue, batch, service = (rnd.choice([rnd.randint(0, 5_000), rnd.randint(0, 10**7),
                                                       rnd.randint(0, 10**13), rnd.randint(-10**6, 10**6),
                                                       rnd.randint(2**53 * 1000, 2**63 - 1),
                                                       rnd.randint(2**63, 2**66)])
                                           for _ in range(5))
        intended = 10**15
        received = intended + e2e
        sent = received - unc
        dequeued = sent + queue
        start = dequeued + batch
        end = start + service
        rec.record_reply(intended, sent, received, Stamps(dequeued, dequeued, start, end, end), 4, "cpu")
        lag = rnd.randint(-10, 10**7)
        rec.record_schedule_lag(intended, intended + lag)
        values = (received - intended, received - sent, dequeued - sent, start - dequeued, end - start,
                  received - end, lag)
        for stage, ns in zip((*REPLY_STAGES, "schedule_lag"), values, strict=True):
            expected_clamped[stage] += ns < 0
            expected_skewed[stage] += ns < -1_000_000
            if not ref[stage].record_value(max(ns, 0) // 1000):
                expected_out_of_range[stage] += 1
    rec.flush()
    for stage, want in ref.items():
        got = rec.interval[stage]
        assert list(got.counts) == list(want.counts), stage
        assert got.get_total_count() == want.get_total_count() > 0, stage
        assert (got.get_min_value(), got.get_max_value()) == (want.get_min_value(), want.get_max_value()), stage
        assert got.get_value_at_percentile(99) == want.get_value_at_percentile(99), stage
        assert rec.out_of_range[stage] == expected_out_of_range[stage], stage
        assert (rec.clamped[stage], rec.skewed[stage]) == (expected_clamped[stage], expected_skewed[stage]), stage
        assert (got.min_value, got.max_value) == (want.min_value, want.max_value), stage  # the raw values too
    assert sum(expected_out_of_range.values()) > 0 and sum(expected_clamped.values()) > 0
    assert sum(expected_skewed.values()) > 0


def test_inlined_gap_recording_matches_record_value_bit_for_bit() -> None:
    """``record_chunk`` records a stream's gaps (ITL) with the arithmetic inlined once more, for one value."""
    rec = Recorder()
    want = new_histogram()
    out_of_range = 0
    rnd = random.Random(11)
    for _ in range(20_000):
        gap = rnd.choice([rnd.randint(0, 5_000_000), rnd.randint(0, 10**10), rnd.randint(0, 10**16), 0])
        rec.record_chunk(0, 0, 10**15, 1, gap)
        if not want.record_value(gap // 1000):
            out_of_range += 1
    rec.flush()
    got = rec.interval["itl"]
    assert list(got.counts) == list(want.counts)
    assert got.get_total_count() == want.get_total_count() > 0
    assert (got.get_min_value(), got.get_max_value()) == (want.get_min_value(), want.get_max_value())
    assert rec.out_of_range["itl"] == out_of_range > 0 and rec.output_tokens == 20_000


def test_a_writes_schedule_lags_match_record_value_bit_for_bit() -> None:
    """``record_schedule_lags`` (one write's requests, sent at one time) counts each as sent and records each lag as
    ``record_value`` would, negative ones clamped, across bulk flushes and past 64 bits."""
    rec = Recorder()
    want = new_histogram()
    rnd = random.Random(13)
    sent_ns = 10**15
    total = 0
    for _ in range(3_000):
        intended = [sent_ns - rnd.choice([rnd.randint(0, 3_000_000), rnd.randint(-5_000, 0), 2**64])
                    for _ in range(rnd.randint(1, 40))]
        rec.record_schedule_lags(intended, sent_ns)
        total += len(intended)
        for i in intended:
            want.record_value(max(sent_ns - i, 0) // 1000)
    rec.flush()
    got = rec.interval["schedule_lag"]
    assert rec.sent == total
    assert list(got.counts) == list(want.counts) and got.get_total_count() == want.get_total_count() > 0
    assert (got.get_min_value(), got.get_max_value()) == (want.get_min_value(), want.get_max_value())
    assert rec.clamped["schedule_lag"] > 0 and rec.out_of_range["schedule_lag"] > 0
