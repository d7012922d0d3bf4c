"""Issue 20 item 3: LLM workload inputs. Dataset files of lengths (CSV, TSV, JSONL, ShareGPT) and their errors, rows
drawn by the seed, ``--max-tokens``, the LLM keys of plan files, ``--abort-on`` refusing whole-run figures, and
``load compare`` / ``load gate`` on summaries with an ``llm`` section (built by the real summary builder, or written
by a real run through the shared Redis to an ``llm-synthetic`` worker)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from loadgen.envelope import Reply, encode_reply
from loadgen.errors import PlanError, SloError
from loadgen.results.abort_rule import parse_abort_rule
from loadgen.results.compare import compare, differences, llm_mismatch
from loadgen.results.objectives import Objectives
from loadgen.results.summary import build_summary
from loadgen.run.engine import Engine, RunResult
from loadgen.run.llm_dataset import estimate_tokens, read_dataset
from loadgen.run.llm_load import MAX_TOKENS, LlmLoad, parse_lengths
from loadgen.run.plan import PlanInput, build_plan
from loadgen.run.schedules import Constant
from loadgen.run.spec import RunSpec
from loadgen.transports import open_transport
from probes.urls import parse_broker_url
from tests.cli import qdeck
from tests.loadgen.test_llm_units import MS, STAMPS, _chunk, _expect
from tests.workers import worker

SHAREGPT = [
    {"id": "a", "conversations": [{"from": "human", "value": "What is a queue?"},  # 16 chars: 4 tokens
                                  {"from": "gpt", "value": "A line of messages, first in, first out."}]},  # 40: 10
    {"id": "b", "conversations": [{"from": "human", "value": "only one turn"}]},
    {"id": "c", "conversations": []},
    {"id": "d", "conversations": [{"from": "gpt", "value": "hello"}, {"from": "human", "value": "hi"}]},
    {"id": "e", "conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "12345"},
                                  {"from": "human", "value": "again"}, {"from": "gpt", "value": "   "}]},
    {"id": "f", "conversations": [{"from": "system", "value": "be brief"}, {"from": "user", "value": "123456789"},
                                  {"from": "human", "value": "ignored"}, {"from": "assistant", "value": "1234"}]},
]


# -- dataset files --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "text", "fmt", "rows"), [
    ("lengths.csv", "id,input_tokens,output_tokens\na,100,20\n\nb,7,300\n", "csv", [(100, 20), (7, 300)]),
    ("lengths.tsv", "prompt_len\toutput_len\n5\t6\n", "tsv", [(5, 6)]),
    ("upper.csv", "Prompt_Tokens,Completion_Tokens\n 8 , 9\n", "csv", [(8, 9)]),
    ("lengths.jsonl", '{"prompt_tokens": 12, "completion_tokens": 3}\n\n{"input_tokens": 4.0, "output_tokens": "5"}\n',
     "jsonl", [(12, 3), (4, 5)]),
    ("share.json", json.dumps(SHAREGPT, indent=1), "sharegpt", [(4, 10), (3, 1)]),
    ("share.jsonl", "\n".join(json.dumps(c) for c in SHAREGPT), "sharegpt", [(4, 10), (3, 1)]),
])
def test_every_format_reads_its_rows(tmp_path: Path, name: str, text: str, fmt: str,
                                     rows: list[tuple[int, int]]) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    ds = read_dataset(path)
    assert (ds.format, list(ds.rows)) == (fmt, rows)
    facts = ds.facts()
    assert facts["file"] == name and facts["rows_used"] == len(rows)
    assert facts["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    if fmt == "sharegpt":  # b and c: fewer than 2 turns; d: no human turn before a gpt one; e: an empty reply
        assert ds.skipped == {"with fewer than 2 turns": 2, "with no human turn followed by a gpt turn": 1,
                              "with an empty prompt or reply": 1}
        assert "characters / 4" in facts["token_counts"]
    else:
        assert ds.skipped == {} and facts["token_counts"] == "from the file"


def test_the_token_estimate_is_characters_over_4() -> None:
    texts = ("", "   ", "a", "abcd", "abcde", "  abcd\n", "日本語")
    assert [estimate_tokens(t) for t in texts] == [0, 0, 1, 1, 2, 1, 1]


@pytest.mark.parametrize(("name", "data", "why"), [
    ("empty.jsonl", b"", "has no usable rows"),
    ("header.csv", b"input_tokens,output_tokens\n", "has no usable rows"),
    ("nocol.csv", b"in,out\n1,2\n", "line 1: the header needs an input_tokens or"),
    ("word.csv", b"input_tokens,output_tokens\n1,2\n3,abc\n", "line 3: output_tokens 'abc' is not a whole number"),
    ("frac.tsv", b"prompt_len\toutput_len\n1.5\t2\n", "line 2: prompt_len '1.5' is not a whole number"),
    ("short.csv", b"input_tokens,output_tokens\n5\n", "line 2: 1 columns"),
    ("zero.jsonl", b'{"input_tokens": 1, "output_tokens": 1}\n{"input_tokens": 0, "output_tokens": 5}\n',
     "line 2: input_tokens 0 is not between 1 and 1,000,000"),
    ("negative.csv", b"input_tokens,output_tokens\n-4,5\n", "line 2: input_tokens '-4' is not between"),
    ("huge.jsonl", f'{{"input_tokens": 1, "output_tokens": {MAX_TOKENS + 1}}}'.encode(), "line 1: output_tokens"),
    ("bool.jsonl", b'{"input_tokens": true, "output_tokens": 5}', "line 1: input_tokens True is not a whole"),
    ("nokeys.jsonl", b'{"prompt": "hi"}', "line 1: needs input_tokens or"),
    ("notjson.jsonl", b'{"input_tokens": 1,\n', "line 1: not JSON"),
    ("latin1.csv", b"input_tokens,output_tokens\n1,2\ncaf\xe9,3\n", "line 3: not UTF-8 text"),
    ("skipped.json", json.dumps(SHAREGPT[1:4]).encode(), "has no usable rows (skipped: 2 with fewer than 2 turns"),
    ("badturn.json", b'[\n{"conversations": []},\n{"conversations": [{"from": "human"}]}\n]',
     "line 3: not a ShareGPT record"),
    ("badlist.json", b'[\n{"conversations": []}\n{"conversations": []}]', "line 3: expected ',' or ']'"),
    ("hugetext.jsonl", json.dumps({"conversations": [{"from": "human", "value": "x" * (4 * MAX_TOKENS + 1)},
                                                     {"from": "gpt", "value": "y"}]}).encode(),
     "line 1: the prompt is about 1,000,001 tokens"),
])
def test_bad_files_are_one_line_naming_file_and_line(tmp_path: Path, name: str, data: bytes, why: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(PlanError) as err:
        read_dataset(path)
    message = str(err.value)
    assert "\n" not in message and f"dataset {path}" in message and why in message, message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"cannot read dataset .*nope\.jsonl: No such file"):
        read_dataset(tmp_path / "nope.jsonl")


def test_rows_are_drawn_shuffled_by_the_seed_each_once_a_pass_and_capped(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("input_tokens,output_tokens\n" + "".join(f"{i},{100 + i}\n" for i in range(1, 11)))
    ds = read_dataset(path)

    def draw(seed: int, n: int = 30, cap: int | None = None) -> list[tuple[int, int]]:
        load = LlmLoad(objectives=Objectives(), seed=seed, dataset=ds, max_tokens=cap)
        return [load.next_lengths() for _ in range(n)]

    a = draw(5)
    assert a == draw(5) and a != draw(6)
    for k in range(3):  # each pass of 10 is a permutation of the rows
        assert sorted(a[10 * k: 10 * k + 10]) == sorted(ds.rows)
    assert a[:10] != a[10:20] and a[:10] != list(ds.rows)
    assert [o for _, o in draw(5, cap=105)] == [min(o, 105) for _, o in a]
    facts = LlmLoad(seed=1, dataset=ds, max_tokens=105).facts()
    assert facts["input_tokens"] == facts["output_tokens"] == "dataset rows.csv" and facts["max_tokens"] == 105
    capped = LlmLoad(output_tokens=parse_lengths("uniform:50,150", "--output-tokens"), seed=1, max_tokens=80)
    assert max(capped.next_lengths()[1] for _ in range(200)) == 80


# -- plan files -------------------------------------------------------------------------------------------------------

PLAN = {"queue": "q", "duration": "1s", "schedule": {"kind": "constant", "rate": 10}}


def test_plan_keys_and_command_line_overrides(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"input_tokens": 3, "output_tokens": 4}\n')
    doc = {**PLAN, "input_tokens": 512, "output_tokens": "uniform:64,256", "max_tokens": 100,
           "objectives": ["ttft<500ms", "tpot<=50ms"]}
    llm = build_plan(PlanInput(), doc, source="p.toml").llm
    assert llm is not None and llm.facts()["input_tokens"] == "fixed:512"
    assert llm.facts()["output_tokens"] == "uniform:64,256" and llm.max_tokens == 100
    assert llm.objectives.texts == ["ttft<500ms", "tpot<=50ms"]
    # options win: an objective list replaces the plan's; --output-tokens replaces one distribution
    llm = build_plan(PlanInput(output_tokens="8", objectives=["e2e<1s"], max_tokens=5), doc).llm
    assert llm is not None and llm.facts()["input_tokens"] == "fixed:512" and llm.facts()["output_tokens"] == "fixed:8"
    assert llm.objectives.texts == ["e2e<1s"] and llm.max_tokens == 5
    # a dataset on the command line replaces the plan's lengths; lengths there replace the plan's dataset
    llm = build_plan(PlanInput(dataset=str(path)), doc).llm
    assert llm is not None and llm.dataset is not None and llm.input_tokens is None and llm.output_tokens is None
    with_dataset = {**PLAN, "dataset": str(path)}
    llm = build_plan(PlanInput(input_tokens="7"), with_dataset).llm
    assert llm is not None and llm.dataset is None and llm.facts()["input_tokens"] == "fixed:7"
    llm = build_plan(PlanInput(), with_dataset).llm
    assert llm is not None and llm.next_lengths() == (3, 4)
    assert build_plan(PlanInput(), PLAN).llm is None


@pytest.mark.parametrize(("extra", "opts", "why"), [
    ({"objective": ["ttft<1s"]}, {}, "plan p.toml: unknown key 'objective' (did you mean 'objectives'?)"),
    ({"input_token": "5"}, {}, "did you mean 'input_tokens'?"),
    ({"input_tokens": True}, {}, "plan p.toml: input_tokens must be a distribution"),
    ({"objectives": "ttft<1s"}, {}, "plan p.toml: objectives must be a list"),
    ({"max_tokens": 1.5}, {}, "plan p.toml: max_tokens must be a whole number"),
    ({"input_tokens": "gamma:1,2"}, {}, "plan p.toml: input_tokens 'gamma:1,2': unknown distribution"),
    ({"objectives": ["ttft>1s"]}, {}, "plan p.toml: objective 'ttft>1s'"),
    ({"dataset": "x.jsonl", "output_tokens": 5}, {}, "plan p.toml: dataset and output_tokens cannot go together"),
    ({"dataset": "/nonexistent/x.jsonl"}, {}, "plan p.toml: cannot read dataset /nonexistent/x.jsonl"),
    ({"max_tokens": 5}, {}, "plan p.toml: max_tokens caps the output lengths"),
    ({"max_tokens": 0, "output_tokens": 5}, {}, "plan p.toml: max_tokens 0: a whole number of tokens"),
    ({}, {"dataset": "x", "input_tokens": "5"}, "--dataset and --input-tokens cannot go together"),
    ({}, {"max_tokens": 5, "input_tokens": "5"}, "--max-tokens caps the output lengths"),
    ({}, {"max_tokens": 2_000_000, "output_tokens": "5"}, "--max-tokens 2000000: a whole number of tokens from 1"),
])
def test_bad_plan_keys(extra: dict[str, Any], opts: dict[str, Any], why: str) -> None:
    with pytest.raises((PlanError, SloError)) as err:
        build_plan(PlanInput(**opts), {**PLAN, **extra}, source="p.toml")
    assert why in str(err.value), str(err.value)


# -- --abort-on ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule", ["attainment>=99% for 5s", "goodput>=20/s for 5s", "output_tokens_per_s>=1 for 2s"])
def test_abort_on_refuses_whole_run_figures(rule: str) -> None:
    with pytest.raises(SloError, match=r"is a whole-run figure; use --slo"):
        parse_abort_rule(rule)
    assert parse_abort_rule("ttft.p99<500ms for 5s").slo.stage == "ttft"


# -- load compare on llm sections (summaries from the real builder) ------------------------------------------------

def _summary(ttft_ms: list[int], *, objectives: tuple[str, ...] = ("ttft<100ms",), llm: bool = True,
             output: str = "uniform:1,10", dataset: Path | None = None, gap_ms: int = 20) -> dict[str, Any]:
    """A run's summary.json through the engine and ``build_summary``: one streamed reply of 5 tokens per TTFT
    (first token, then 4 more ``gap_ms`` later), or plain replies when ``llm`` is False."""
    spec = RunSpec(queue="q", schedule=Constant(10), duration_s=1.0, timeout_s=1.0, run_id="run")
    load = None
    if llm:
        lengths = (None, parse_lengths(output, "--output-tokens")) if dataset is None else (None, None)
        load = LlmLoad(lengths[0], lengths[1], Objectives.parse(list(objectives)), 1,
                       read_dataset(dataset) if dataset is not None else None)
    engine = Engine(open_transport(parse_broker_url("memory://t"), "q", "run"), spec, llm=load)
    engine.result = RunResult(spec=spec, recorder=engine.recorder, started_epoch_s=0.0, measured_s=2.0)
    for seq, ttft in enumerate(ttft_ms, start=1):
        _expect(engine, seq, 0, 0)
        if llm:
            _chunk(engine, seq, 0, 1, False, ttft * MS)
            _chunk(engine, seq, 1, 4, True, (ttft + gap_ms) * MS)
        else:
            engine._on_reply(encode_reply(Reply("run", seq, "w", "cpu", 1, STAMPS)), ttft * MS)
    engine.recorder.roll(0.0, 2.0)
    return build_summary(engine.result.record(broker="memory://t", broker_kind="memory"))


def _by_name(checks: list[Any]) -> dict[str, Any]:
    return {c.name: c for c in checks}


def test_compare_checks_llm_figures_with_the_right_direction() -> None:
    base = _summary([50, 60, 70, 80])  # 4 of 4 meet ttft<100ms
    same = _by_name(compare(base, base, 0.10))
    for name in ("ttft.p50", "ttft.p90", "ttft.p99", "tpot.p50", "tpot.p99", "itl.p99", "output_tokens_per_s",
                 "goodput", "attainment", "p99"):
        assert same[name].ok, name
    assert same["attainment"].base == "100.00%" and same["goodput"].base == "2.00/s"
    assert same["output_tokens_per_s"].base == "10.00/s"  # 4 × 5 tokens in 2 s
    # slower first tokens and gaps, two of four miss the objective: every LLM figure regressed
    worse = _by_name(compare(base, _summary([50, 60, 170, 180], gap_ms=40), 0.10))
    for name in ("ttft.p90", "ttft.p99", "tpot.p50", "itl.p50", "goodput", "attainment"):
        assert not worse[name].ok, name
    assert worse["attainment"].new == "50.00%" and worse["attainment"].change == "-50 pp"
    assert worse["goodput"].change == "-50.0%" and worse["ttft.p50"].ok  # the median is the same
    # the other way round is better, never a regression: higher goodput, attainment and tokens/s are better
    better = compare(_summary([50, 60, 170, 180], gap_ms=40), base, 0.10)
    assert all(c.ok for c in better), [c for c in better if not c.ok]
    assert _by_name(better)["attainment"].change == "+50 pp"
    # fewer tokens per second is worse
    fewer = _by_name(compare(base, _summary([50, 60]), 0.10))
    assert not fewer["output_tokens_per_s"].ok and fewer["output_tokens_per_s"].change == "-50.0%"


def test_compare_says_what_differs_and_refuses_llm_against_plain(tmp_path: Path) -> None:
    base = _summary([50, 60])
    assert differences(base, _summary([90, 95])) == []
    differ = differences(base, _summary([50, 60], objectives=("ttft<100ms", "tpot<10ms"), output="fixed:5"))
    assert differ == ["token lengths: input -, output uniform:1,10 → input -, output fixed:5",
                      "objectives: ttft<100ms → ttft<100ms, tpot<10ms"]
    rows = tmp_path / "a.jsonl"
    rows.write_text('{"input_tokens": 3, "output_tokens": 4}\n')
    renamed = tmp_path / "b.jsonl"
    renamed.write_bytes(rows.read_bytes())
    other = tmp_path / "c.jsonl"
    other.write_text('{"input_tokens": 3, "output_tokens": 5}\n')
    with_rows = _summary([50], dataset=rows)
    assert with_rows["llm"]["dataset"]["sha256"] == hashlib.sha256(rows.read_bytes()).hexdigest()
    assert differences(with_rows, _summary([50], dataset=renamed)) == []  # the same content under another name
    assert differences(with_rows, _summary([50], dataset=other))[0].startswith(
        "token lengths: dataset a.jsonl (sha256 ")
    plain = _summary([50, 60], llm=False)
    assert "llm" not in plain and llm_mismatch(base, plain) == "base" and llm_mismatch(plain, base) == "new"
    assert llm_mismatch(base, base) is None
    assert "LLM-shaped (streamed replies): True → False" in differences(base, plain)
    assert not any(c.name.startswith(("ttft", "goodput")) for c in compare(base, plain, 0.1))
    # through the CLI: one line, exit 2, unless --anyway
    (tmp_path / "llm.json").write_text(json.dumps(base))
    (tmp_path / "plain.json").write_text(json.dumps(plain))
    refused = qdeck("load", "compare", str(tmp_path / "plain.json"), str(tmp_path / "llm.json"))
    assert refused.code == 2 and refused.out == "" and refused.err.count("\n") == 1, refused.all
    assert "llm.json is an LLM-shaped run (streamed replies) and" in refused.err and "--anyway" in refused.err
    anyway = qdeck("load", "compare", str(tmp_path / "plain.json"), str(tmp_path / "llm.json"), "--anyway", "--json")
    assert anyway.code in (0, 99) and "compared anyway: LLM-shaped" in anyway.err, anyway.all
    assert {c["metric"] for c in anyway.json()} >= {"p50", "p99"}


# -- a real run: --dataset through the shared Redis, then gate and compare on its summary ----------------------------

MODEL = "llm-synthetic:step_ms=2,per_seq_ms=0.1,prefill_ms=0.001,chunk=2"


@pytest.mark.redis
def test_a_dataset_run_carries_the_datasets_lengths(redis_url: str, redis_queue: str, tmp_path: Path) -> None:
    rows = [(17, 3), (250, 9), (64, 5), (33, 12)]
    dataset = tmp_path / "lengths.jsonl"
    dataset.write_text("".join(json.dumps({"prompt_tokens": i, "completion_tokens": o}) + "\n" for i, o in rows))
    out = tmp_path / "run"
    with worker(redis_url, redis_queue, "--model", MODEL, tmp_path=tmp_path):
        run = qdeck("load", "run", "-b", redis_url, "-q", redis_queue, "--rate", "20", "--requests", "12",
                    "--dataset", str(dataset), "--max-tokens", "10", "--objective", "ttft<5s", "--quiet",
                    "--out", str(out), timeout=60)
    assert run.code == 0, run.all
    summary = json.loads((out / "summary.json").read_text())
    counts, llm = summary["counts"], summary["llm"]
    assert counts["sent"] == counts["replied"] == 12, counts
    # every request carried a row's lengths: 3 passes over 4 rows, outputs capped at 10
    assert (llm["input_tokens"]["count"], llm["input_tokens"]["min"], llm["input_tokens"]["max"]) == (12, 17, 250)
    assert (llm["output_tokens"]["min"], llm["output_tokens"]["max"]) == (3, 10)
    assert llm["output_tokens"]["mean"] == pytest.approx((3 + 9 + 5 + 10) / 4)
    assert llm["input_tokens"]["mean"] == pytest.approx(sum(i for i, _ in rows) / 4)
    ds = llm["dataset"]
    assert (ds["file"], ds["format"], ds["rows_used"]) == ("lengths.jsonl", "jsonl", 4)
    assert ds["sha256"] == hashlib.sha256(dataset.read_bytes()).hexdigest() and llm["max_tokens"] == 10
    assert llm["input_lengths"] == llm["output_lengths"] == "dataset lengths.jsonl"
    assert "lengths: dataset lengths.jsonl (jsonl, 4 rows" in run.out and "output capped at 10 tokens" in run.out
    # load gate judges the LLM names on this summary (two fail: exit 99); compare checks its LLM figures
    gate = qdeck("load", "gate", str(out / "summary.json"), "--slo", "ttft.p99<10s", "--slo", "attainment>=100%",
                 "--slo", "goodput>=0.1/s", "--slo", "output_tokens_per_s>=1/s", "--slo", "tpot.p50<5s",
                 "--slo", "ttft.p50<1us", "--slo", "goodput>=1000/s", "--json")
    assert gate.code == 99 and [v["ok"] for v in gate.json()] == [True] * 5 + [False] * 2, gate.all
    same = _by_name(compare(summary, summary, 0.10))
    for name in ("ttft.p99", "tpot.p99", "itl.p99", "goodput", "attainment", "output_tokens_per_s"):
        assert same[name].ok and same[name].base == same[name].new, name
