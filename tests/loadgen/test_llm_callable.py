"""A user's generator function as a streaming worker model (``--model pkg.mod:fn`` where fn yields chunks):
chunks counted as documented, the stream ended at max_tokens or when fn returns, one request's exception ending
only its own stream, and a real run through Redis reporting the LLM metrics."""

from __future__ import annotations

import json
import threading
from typing import Any

from loadgen.envelope import Request
from loadgen.worker.models import load_model
from loadgen.worker.models.llm_callable import CallableStreamModel, chunk_tokens
from loadgen.worker.models.llm_synthetic import StepOutput
from tests.cli import qdeck
from tests.workers import unique, worker


def run_model(model: CallableStreamModel, requests: list[Request]) -> dict[int, list[tuple[int, bool, str | None]]]:
    """Submit ``requests`` at once and collect each one's (tokens, final, error) events until all have ended."""
    got: dict[int, list[tuple[int, bool, str | None]]] = {}
    done = threading.Event()

    def emit(step: StepOutput) -> None:
        for ev in step.events:
            got.setdefault(ev.key, []).append((ev.tokens, ev.final, step.error))
        if sum(1 for evs in got.values() if evs[-1][1]) == len(requests):
            done.set()

    for key, req in enumerate(requests, 1):
        model.submit_request(key, req)
    model.start(emit)
    try:
        assert done.wait(10), got
    finally:
        model.close()
    return got


def req(payload: Any, max_tokens: int) -> Request:
    return Request("r", 1, 0, 0, "reply", "w", payload, 16, max_tokens)


def test_chunks_end_at_max_tokens_or_when_the_generator_returns() -> None:
    def gen(request: dict[str, Any]) -> Any:
        yield from (3, [7, 8], "text", 5)

    model = CallableStreamModel(gen, "tests:gen", max_seqs=2)
    got = run_model(model, [req("a", 4), req("b", 0), req("c", 100)])
    assert got[1] == [(3, False, None), (1, True, None)]  # the chunk reaching max_tokens is final, cut to it
    assert got[2] == [(3, False, None), (2, False, None), (1, False, None), (5, False, None), (0, True, None)]
    assert got[3][-1] == (0, True, None) and sum(t for t, _f, _e in got[3]) == 11  # fn returned: end of sequence
    assert [chunk_tokens(x) for x in (4, (1, 2), "word", b"x", True)] == [4, 2, 1, 1, 1]


def test_one_requests_exception_ends_only_its_stream() -> None:
    model = load_model("tests.models:stream_words")
    assert isinstance(model, CallableStreamModel) and model.max_seqs == 8 and model.streaming
    got = run_model(model, [req("boom", 10), req("fine", 6)])
    assert got[1][0] == (2, False, None)
    assert got[1][-1][1] is True and "RuntimeError: decoder blew up" in str(got[1][-1][2])
    assert got[2] == [(2, False, None), (2, False, None), (2, True, None)]


def test_a_generator_model_streams_through_redis(redis_url: str, tmp_path) -> None:
    queue = unique("qdeck-test-llm-callable")
    out = tmp_path / "run"
    try:
        with worker(redis_url, queue, "--model", "tests.models:stream_words", tmp_path=tmp_path):
            run = qdeck("load", "run", "--broker", redis_url, "--queue", queue, "--rate", "20", "--duration", "2s",
                        "--output-tokens", "uniform:4,10", "--seed", "5", "--out", str(out), "--quiet", timeout=60)
        assert run.code == 0, run.all
        summary = json.loads((out / "summary.json").read_text())
        c, llm = summary["counts"], summary["llm"]
        assert c["sent"] == c["replied"] >= 20 and c["errors"] == 0 and c["timeouts"] == 0
        assert llm["streams"] == c["replied"] and llm["ttft"]["count"] == c["replied"]
        assert llm["output_tokens"]["min"] >= 4 and llm["output_tokens"]["max"] <= 10
    finally:
        import redis

        with redis.Redis.from_url(redis_url) as r:
            r.delete(queue, f"{queue}:dlq")
