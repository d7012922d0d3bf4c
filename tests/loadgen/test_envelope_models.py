"""The envelope (round trips, malformed input never raises) and the model registry."""

from __future__ import annotations

import pytest

from loadgen.envelope import (
    Malformed,
    Reply,
    Request,
    Stamps,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    peek_reply_to,
)
from loadgen.worker.models import EchoModel, ModelError, SyntheticModel, load_model, parse_spec


def test_request_and_reply_round_trip() -> None:
    req = Request("run1", 7, 1_000, 1_050, "qdeck:reply:run1", "embed", {"text": "héllo", "n": [1, 2]})
    assert decode_request(encode_request(req)) == req
    rep = Reply("run1", 7, "w-1", "cuda:0", 16, Stamps(1, 2, 3, 4, 5), output=[0.5, -1.0])
    assert decode_reply(encode_reply(rep)) == rep
    failed = Reply("run1", 8, "w-1", "cpu", 1, Stamps(1, 1, 1, 1, 1), error="boom")
    assert decode_reply(encode_reply(failed)) == failed
    assert rep.stamps.ordered() and not Stamps(5, 4, 3, 2, 1).ordered()


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\xff\xfe", "not UTF-8"),
    (b"{not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"v": 2, "t": "req"}', "unsupported envelope version 2"),
    (b'{"v": 1, "t": "rep"}', "expected a 'req' envelope"),
    (b'{"v": 1, "t": "req", "run": "r"}', "missing field 'seq'"),
    (b'{"v": 1, "t": "req", "run": "r", "seq": true, "intended_ns": 1, "sent_ns": 1, "reply_to": "x", '
     b'"workload": "w", "payload": 1}', "field 'seq' has the wrong type"),
    (b'{"v": 1, "t": "req", "run": "r", "seq": 1, "intended_ns": 1, "sent_ns": 1, "reply_to": "", '
     b'"workload": "w", "payload": 1}', "empty reply_to"),
    (b"[" * 100_000, "JSON nested too deeply"),
])
def test_malformed_requests_come_back_with_a_reason(raw: bytes, reason: str) -> None:
    result = decode_request(raw)
    assert isinstance(result, Malformed)
    assert result.reason.startswith(reason), result.reason


def test_malformed_replies_and_reply_to_peek() -> None:
    assert isinstance(decode_reply(b'{"v": 1, "t": "rep", "run": "r", "seq": 1, "worker": "w", "device": "cpu", '
                                   b'"batch_size": 1, "stamps": [1, 2]}'), Malformed)
    assert peek_reply_to(b'{"reply_to": "somewhere"}') == "somewhere"
    assert peek_reply_to(b"\x00garbage") is None


def test_model_specs() -> None:
    assert parse_spec("synthetic:base_ms=20,per_item_ms=0.5") == ("synthetic", {"base_ms": "20", "per_item_ms": "0.5"})
    assert parse_spec("tests.models:fail_on_poison") == ("tests.models:fail_on_poison", {})
    assert isinstance(load_model("echo"), EchoModel)
    synthetic = load_model("synthetic:base_ms=1,per_item_ms=2,jitter=uniform,jitter_ms=0,seed=3")
    assert isinstance(synthetic, SyntheticModel)
    assert synthetic.service_s(4) == pytest.approx(0.009)
    assert synthetic.infer(["ab", "c"]) == [2, 1]
    assert load_model("tests.models:fail_on_poison").infer(["x"]) == ["x"]


@pytest.mark.parametrize(("spec", "message"), [
    ("nope", "unknown model 'nope'"),
    ("synthetic:speed=3", "unknown parameter 'speed'"),
    ("synthetic:base_ms=fast", "base_ms='fast' is not a float"),
    ("synthetic:jitter=gauss", "jitter must be one of"),
    ("synthetic:base_ms", "not key=value"),
    ("no_such_module_qdeck:fn", "cannot import model module"),
    ("tests.models:missing", "has no attribute"),
])
def test_bad_model_specs_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        load_model(spec)


def test_synthetic_stall_happens_once() -> None:
    model = SyntheticModel(base_ms=0, stall_ms=50, stall_after_s=0)
    assert model.service_s(1) == pytest.approx(0.05)
    assert model.service_s(1) == 0


def test_request_template_gives_encode_requests_bytes() -> None:
    from loadgen.envelope import RequestTemplate

    for payload in ("the quick \"brown\" fox ünï \u2028", {"a": [1, 2.5, None, True]}, None, 3, 2**80, ["x"]):
        req = Request("ab12", 17, 1_700_000_000_000_000_000, 1_700_000_000_000_001_000, "qdeck:reply:ab12", "chat",
                      payload)
        template = RequestTemplate(req.run, req.reply_to, req.workload, payload)
        assert template.encode(req.seq, req.intended_ns, req.sent_ns) == encode_request(req)
        assert decode_request(template.encode(req.seq, req.intended_ns, req.sent_ns)) == req


def test_decoding_is_the_standard_librarys_where_orjson_would_differ() -> None:
    import json

    head = '{"v":1,"t":"req","run":"a","seq":1,"intended_ns":1,"sent_ns":1,"reply_to":"x","workload":"w","payload":'
    for payload in ("[12345678901234567890123, -99999999999999999999]", '"\\ud800"', "NaN", "1e400", "-0"):
        got = decode_request(head + payload + "}")
        assert isinstance(got, Request), payload
        want = json.loads(payload)
        assert repr(got.payload) == repr(want), payload  # exact: big integers stay integers
    big_seq = decode_request(head.replace('"seq":1', '"seq":123456789012345678901234') + "1}")
    assert isinstance(big_seq, Request) and big_seq.seq == 123456789012345678901234


def test_a_valid_reply_the_fast_path_leaves_to_the_standard_library_still_decodes() -> None:
    import json

    head = '{"v":1,"t":"rep","run":"a","seq":1,"worker":"w","device":"cpu","batch_size":1,"stamps":[1,2,3,4,5],'
    for output in ("[123456789012345678901234]", '"\\ud800"'):
        got = decode_reply(head + '"output":' + output + "}")
        assert isinstance(got, Reply), output
        assert repr(got.output) == repr(json.loads(output))
