"""What the receiver refuses, and why: every reason, on payloads built as a node builds them."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from edge_agent.contract import encode_batch
from edge_agent.ioc.intake import ContractValidator, DataMessage, Intake, Invalid, Refusal
from tests.ioc.conftest import PREFIX, LightNode

SCHEMA = json.loads(
    resources.files("edge_agent.schema").joinpath("contract.schema.json").read_text()
)

NODE = LightNode("n1")
BATCH = f"{NODE.topics.base}/data/batch"
SINGLE = f"{NODE.topics.base}/data/aq-1"


@pytest.fixture(scope="module")
def intake() -> Intake:
    return Intake(PREFIX, max_payload_bytes=64 * 1024, max_inflated_bytes=256 * 1024)


def refused(result: object) -> Invalid:
    assert isinstance(result, Refusal), result
    return result.reason


def test_good_single_events_and_batches_plain_or_compressed(intake: Intake) -> None:
    single = intake.parse(SINGLE, NODE.envelope(1))
    assert isinstance(single, DataMessage) and [e["seq"] for e in single.envelopes] == [1]
    for compress in (False, True):
        batch = intake.parse(BATCH, NODE.batch([2, 3, 4], compress=compress))
        assert isinstance(batch, DataMessage)
        assert [e["seq"] for e in batch.envelopes] == [2, 3, 4] and not batch.refused


def envelope(**changes: Any) -> bytes:
    body = json.loads(NODE.envelope(5))
    body.update(changes)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (SINGLE, b"{not json", Invalid.MALFORMED),
        (SINGLE, b"\xff\xfe", Invalid.MALFORMED),
        (
            SINGLE,
            envelope(
                data={
                    "sensor": "a",
                    "quantity": "t",
                    "value": float("nan"),
                    "unit": "Cel",
                    "quality": "ok",
                }
            ),
            Invalid.MALFORMED,
        ),
        (SINGLE, NODE.envelope(5).replace(b'"value":5.0', b'"value":1e999'), Invalid.MALFORMED),
        (BATCH, b"\x28\xb5\x2f\xfd garbage", Invalid.MALFORMED),
        (SINGLE, envelope(v=2), Invalid.UNKNOWN_VERSION),
        (BATCH, b'{"v": 3, "batch": []}', Invalid.UNKNOWN_VERSION),
        (SINGLE, envelope(kind="weather"), Invalid.SCHEMA),
        (SINGLE, envelope(seq=0), Invalid.SCHEMA),
        (SINGLE, envelope(seq=2**63), Invalid.SCHEMA),
        (SINGLE, envelope(ts="2026-13-45T99:99:99Z"), Invalid.SCHEMA),
        (SINGLE, envelope(extra=1), Invalid.SCHEMA),
        (BATCH, b'{"v": 1, "batch": []}', Invalid.SCHEMA),
        (SINGLE, b"x" * (64 * 1024 + 1), Invalid.OVERSIZED),
        (f"{PREFIX}/d1/n1/data/a/b", NODE.envelope(1), Invalid.FOREIGN_TOPIC),
        (f"{PREFIX}/d1/n 1/data/a", NODE.envelope(1), Invalid.FOREIGN_TOPIC),
        ("elsewhere/d1/n1/data/a", NODE.envelope(1), Invalid.FOREIGN_TOPIC),
        (f"{PREFIX}/d1/n1/cmd/ping", NODE.envelope(1), Invalid.FOREIGN_TOPIC),
        (f"{PREFIX}/d1/other/data/aq-1", NODE.envelope(1), Invalid.NODE_MISMATCH),
        (f"{PREFIX}/d9/n1/status", NODE.status(), Invalid.NODE_MISMATCH),
        (NODE.topics.status, b'{"v": 1, "node": "n1"}', Invalid.SCHEMA),
    ],
)
def test_every_kind_of_bad_input_is_refused_with_its_reason(
    intake: Intake, topic: str, payload: bytes, reason: Invalid
) -> None:
    assert refused(intake.parse(topic, payload)) is reason


def test_a_zstd_bomb_is_refused_without_inflating_it(intake: Intake) -> None:
    huge = b'{"v":1,"batch":[' + b" " * (10 * 1024 * 1024) + b"]}"
    declared = zstandard.ZstdCompressor().compress(huge)
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(huge)
    assert len(declared) < 64 * 1024 and len(unsized) < 64 * 1024
    assert refused(intake.parse(BATCH, declared)) is Invalid.OVERSIZED
    assert refused(intake.parse(BATCH, unsized)) is Invalid.OVERSIZED


def test_a_batch_keeps_its_good_envelopes_and_refuses_the_others(intake: Intake) -> None:
    other = LightNode("intruder")
    bad = json.loads(NODE.envelope(3))
    bad["kind"] = "nope"
    payload = encode_batch(
        [NODE.envelope(1), other.envelope(2), json.dumps(bad).encode(), NODE.envelope(4)]
    )
    result = intake.parse(BATCH, payload)
    assert isinstance(result, DataMessage)
    assert [e["seq"] for e in result.envelopes] == [1, 4]
    assert [r.reason for r in result.refused] == [Invalid.NODE_MISMATCH, Invalid.SCHEMA]


def test_an_empty_retained_status_is_nothing_to_store(intake: Intake) -> None:
    assert intake.parse(NODE.topics.status, b"", retained=True) is None


def _reference(definition: str) -> Draft202012Validator:
    return Draft202012Validator({**SCHEMA, "$ref": f"#/$defs/{definition}"})


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 2**40)
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(["v", "node", "epoch", "seq", "ts", "kind", "data", "zzz"]),
    value=json_values,
    data_field=st.sampled_from(["sensor", "quantity", "value", "unit", "quality", "stats", "raw"]),
    data_value=json_values,
)
def test_the_compiled_validator_agrees_with_the_reference_validator(
    field: str, value: Any, data_field: str, data_value: Any
) -> None:
    # jsonschema-rs at run time, the pure-Python jsonschema as the reference: mutated real
    # envelopes must get the same verdict from both.
    compiled = ContractValidator()
    for mutate_data in (False, True):
        body = json.loads(NODE.envelope(7))
        if mutate_data:
            body["data"][data_field] = data_value
        else:
            body[field] = value
        expected = _reference("envelope").is_valid(body)
        assert compiled.is_valid("envelope", body) is expected, body
