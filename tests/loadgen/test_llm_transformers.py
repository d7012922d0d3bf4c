"""The ``llm-transformers`` worker model: a real random-weight Llama from transformers, continuous batching with a KV
cache (the tokens are the ones a full recomputation gives), the chunk rule, errors that end streams but not the
engine, bad parameters; and one LLM-shaped run through a real ``qdeck worker`` on the shared Redis."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import pytest

from loadgen.errors import ModelError
from loadgen.worker.models import load_model
from loadgen.worker.models.llm_synthetic import StepOutput
from tests.cli import qdeck
from tests.workers import worker

Request = tuple[int, int, int]  # key, input tokens, max tokens


@pytest.fixture(scope="module")
def torch() -> Any:
    return pytest.importorskip("torch", reason="the inference extra is not installed")


def _tiny(spec: str = "") -> Any:
    from loadgen.worker.models.llm_transformers import LlmTransformersModel

    model = load_model(f"llm-transformers:size=tiny{spec}", "cpu")
    assert isinstance(model, LlmTransformersModel) and model.streaming and model.device == "cpu"
    model.record = True
    model.warmup()
    return model


def _serve(model: Any, first: list[Request], later: dict[int, list[Request]] | None = None) -> list[StepOutput]:
    """Drive the engine: ``first`` waits before it starts (so they join together); ``later[i]`` is submitted from
    the emit of step i, so it joins at step i + 1. Returns every step once all requests are final."""
    steps: list[StepOutput] = []
    later = later or {}
    remaining = {key for key, _i, _o in first} | {key for batch in later.values() for key, _i, _o in batch}
    finished = threading.Event()

    def emit(step: StepOutput) -> None:
        steps.append(step)
        for key, n_in, n_out in later.get(len(steps) - 1, []):
            model.submit(key, n_in, n_out)
        remaining.difference_update(ev.key for ev in step.events if ev.final)
        if not remaining:
            finished.set()

    for key, n_in, n_out in first:
        model.submit(key, n_in, n_out)
    model.start(emit)
    try:
        assert finished.wait(30)
    finally:
        model.close()
    return steps


def _record_forwards(model: Any) -> list[tuple[int, int, int]]:
    """(batch, input length, cached length: -1 with no cache) of every forward pass of the transformers model."""
    calls: list[tuple[int, int, int]] = []

    def hook(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        batch, length = kwargs["input_ids"].shape
        calls.append((batch, length, -1 if cache is None else cache.get_seq_length()))

    model.module.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


def _greedy_without_cache(torch: Any, model: Any, prompt: list[int], n: int) -> list[int]:
    """The reference: every token from a forward pass over the whole sequence so far, alone, with no cache."""
    ids, out = torch.tensor([prompt]), []
    with torch.inference_mode():
        for _ in range(n):
            out.append(int(model.module(input_ids=ids, use_cache=False).logits[0, -1].argmax()))
            ids = torch.cat([ids, torch.tensor([[out[-1]]])], dim=1)
    return out


def _chunks(steps: list[StepOutput], key: int) -> list[tuple[int, bool, bool]]:
    return [(ev.tokens, ev.first, ev.final) for s in steps for ev in s.events if ev.key == key]


def test_continuous_batching_streams_in_chunks_with_a_kv_cache(torch: Any) -> None:
    model = _tiny(",chunk=3")
    calls = _record_forwards(model)
    first = [(1, 10, 7), (2, 10, 5), (3, 17, 1)]
    later = {0: [(4, 25, 6)], 2: [(5, 10, 4)]}
    steps = _serve(model, first, later)
    requests = first + [r for batch in later.values() for r in batch]
    # the first token at once as chunk 0, then every 3 tokens, the rest in the final chunk
    expected = {1: [1, 3, 3], 2: [1, 3, 1], 3: [1], 4: [1, 3, 2], 5: [1, 3]}
    for key, sizes in expected.items():
        chunks = _chunks(steps, key)
        assert [n for n, _f, _e in chunks] == sizes, key
        assert [f for _n, f, _e in chunks] == [True] + [False] * (len(sizes) - 1), key
        assert [e for _n, _f, e in chunks] == [False] * (len(sizes) - 1) + [True], key
    # continuous batching: each joins at the step boundary after it was submitted, into the running batch
    joined = {ev.key: i for i, s in enumerate(steps) for ev in s.events if ev.first}
    assert joined == {1: 0, 2: 0, 3: 0, 4: 1, 5: 3}
    assert [s.batch for s in steps[:5]] == [3, 3, 3, 4, 4]  # 3 left after step 0 as 4 joined; then 5 joined
    assert all(s.error is None and s.start_ns <= s.end_ns for s in steps)
    # the KV cache: a prefill pass per group of equal prompt length on an empty cache, then one token per sequence
    # per decode pass on the cached sequence; nothing is ever computed again
    assert all(cached >= 0 for _b, _n, cached in calls)
    prefills = [c for c in calls if c[2] == 0]
    assert sorted((b, n) for b, n, _c in prefills) == [(1, 10), (1, 17), (1, 25), (2, 10)]
    assert all(n == 1 and cached > 0 for _b, n, cached in calls if cached)
    assert sum(b * n for b, n, _c in calls) == sum(n_in + n_out - 1 for _k, n_in, n_out in requests)
    assert max(b for b, n, cached in calls if cached) == 4
    # the padded batch gives every sequence the tokens it gets alone, from scratch
    for key, n_in, n_out in requests:
        prompt, generated = model.tokens[key]
        assert len(prompt) == n_in and len(generated) == n_out
        assert generated == _greedy_without_cache(torch, model, prompt, n_out), key


def test_chunk_1_sends_every_token_and_the_seed_fixes_weights_and_prompts(torch: Any) -> None:
    model = _tiny(",seed=7")
    steps = _serve(model, [(1, 5, 4), (2, 8, 3)])
    assert _chunks(steps, 1) == [(1, True, False), (1, False, False), (1, False, False), (1, False, True)]
    assert _chunks(steps, 2) == [(1, True, False), (1, False, False), (1, False, True)]
    again = _tiny(",seed=7")
    _serve(again, [(1, 5, 4), (2, 8, 3)])
    assert again.tokens == model.tokens
    other = _tiny(",seed=8")
    _serve(other, [(1, 5, 4)])
    assert other.tokens[1] != model.tokens[1]


def test_a_model_error_ends_every_held_stream_and_the_engine_serves_on(torch: Any) -> None:
    model = _tiny()
    calls = 0

    def fail_third(_module: Any, _args: Any, _kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("injected fault")

    model.module.register_forward_pre_hook(fail_third, with_kwargs=True)
    # 1 and 2 run (prefill, decode, then the failing decode); 3 is refused (2 048 positions), 4 comes after
    steps = _serve(model, [(1, 10, 5), (2, 10, 5), (3, 2040, 20)], {3: [(4, 6, 2)]})
    refused = [s for s in steps if s.error and "too long" in s.error]
    assert len(refused) == 1 and [(e.key, e.final) for e in refused[0].events] == [(3, True)]
    assert "at most 2048" in (refused[0].error or "")
    failed = [s for s in steps if s.error and "injected" in s.error]
    assert len(failed) == 1 and failed[0].error == "RuntimeError: injected fault"
    assert sorted((e.key, e.tokens, e.first, e.final) for e in failed[0].events) == [(1, 0, False, True),
                                                                                   (2, 0, False, True)]
    assert _chunks(steps, 4) == [(1, True, False), (1, False, True)]  # served after the failure
    assert model.held() == 0


def test_bad_parameters_are_one_line_model_errors(torch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for spec, message in [("size=huge", "size must be one of tiny, small, base, not 'huge'"),
                          ("dtype=float16", "dtype=float16 needs --device cuda"),
                          ("dtype=int8", "dtype must be one of"),
                          ("chunk=0", "chunk must be at least 1"),
                          ("speed=3", "unknown parameter 'speed'"),
                          ("max_seqs=many", "max_seqs='many' is not a int"),
                          ("input_tokens=2000,output_tokens=100", "at most 2048")]:
        with pytest.raises(ModelError, match=message):
            load_model(f"llm-transformers:{spec}", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA device"):
            load_model("llm-transformers", "cuda")
    with pytest.raises(ModelError, match="streams its replies"):
        _tiny().infer(["x"])
    monkeypatch.setitem(sys.modules, "transformers", None)  # as without the inference extra
    with pytest.raises(ModelError, match=r"needs the inference extra: pip install 'qdeck\[inference\]'"):
        load_model("llm-transformers", "cpu")


def test_the_worker_refuses_a_bad_size_in_one_line() -> None:
    run = qdeck("worker", "-b", "memory://llm-transformers", "-q", "q", "--model", "llm-transformers:size=huge")
    assert run.code == 2, run.all
    assert run.err.strip().splitlines() == [run.err.strip()] and "Traceback" not in run.err
    assert "size must be one of tiny, small, base" in run.err


@pytest.mark.slow
def test_llm_run_through_redis_against_a_transformers_worker(torch: Any, redis_url: str, redis_queue: str,
                                                            tmp_path: Any) -> None:
    out = tmp_path / "run"
    with worker(redis_url, redis_queue, "--model", "llm-transformers:size=tiny,max_seqs=8", "--device", "cpu",
                "--metrics-format", "json", tmp_path=tmp_path) as w:
        deadline = time.monotonic() + 60  # importing torch and transformers takes seconds: not in the requests' time
        while not w.events("serving"):
            assert w.proc.poll() is None and time.monotonic() < deadline, w.log()
            time.sleep(0.1)
        run = qdeck("load", "run", "--broker", redis_url, "--queue", redis_queue, "--rate", "12", "--duration", "1s",
                    "--seed", "5", "--input-tokens", "uniform:16,48", "--output-tokens", "6", "--out", str(out),
                    "--quiet", timeout=120)
    assert run.code == 0, run.all + w.log()
    assert w.events("serving")[0]["device"] == "cpu"
    summary = json.loads((out / "summary.json").read_text())
    c = summary["counts"]
    assert c["sent"] >= 10 and c["replied"] == c["sent"], c
    assert c["errors"] == 0 and c["timeouts"] == 0 and c["malformed_replies"] == 0 and c["duplicates"] == 0
    llm = summary["llm"]
    assert llm["streams"] == c["replied"]
    assert llm["ttft"]["count"] == llm["tpot"]["count"] == c["replied"]
    assert llm["itl"]["count"] == 5 * c["replied"]  # 6 tokens, a chunk each: 5 gaps per request
    assert llm["output_tokens"]["min"] == llm["output_tokens"]["max"] == 6
    assert 16 <= llm["input_tokens"]["min"] <= llm["input_tokens"]["max"] <= 48
    assert llm["output_tokens_per_s"]["value"] > 0
