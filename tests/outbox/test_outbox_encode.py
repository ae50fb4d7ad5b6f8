"""The writer's spliced envelope is byte for byte `Envelope.encode()`."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.contract import Envelope, dumps
from edge_agent.outbox.encode import EnvelopeEncoder, TailEncoder, encode_data

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300)
@given(
    node=st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True),
    epoch=st.text(min_size=1, max_size=20),
    seq=st.integers(1, 2**62),
    ts=st.floats(0, 4_102_444_800, allow_nan=False),
    kind=st.text(min_size=1, max_size=12),
    data=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
)
def test_spliced_envelope_equals_the_contract(
    node: str, epoch: str, seq: int, ts: float, kind: str, data: dict[str, Any]
) -> None:
    assert encode_data(data) == dumps(data)
    encoder = EnvelopeEncoder(node, epoch)
    spliced = encoder.encode(seq, ts, kind, encode_data(data))
    assert spliced == Envelope(node, epoch, seq, ts, kind, data).encode()
    # A producer's tail encoder lives for the whole run: its cached timestamp and kind text
    # must follow each new event.
    tail = _TAILS.tail(ts, kind, encode_data(data))
    assert encoder.splice(seq, tail) == spliced
    assert _TAILS.encode(ts, kind, data) == tail


_TAILS = TailEncoder()


@settings(max_examples=2000)
@given(ts=st.floats(0, 4_102_444_800, allow_nan=False) | st.integers(0, 2**32).map(float))
def test_timestamps_round_like_datetime(ts: float) -> None:
    from edge_agent.contract import utc_iso
    from edge_agent.outbox.encode import iso_bytes

    assert iso_bytes(ts).decode() == utc_iso(ts)
    for near in (ts + 0.0004999, ts + 0.0005, ts + 0.9999995, ts + 0.9999996):
        assert iso_bytes(near).decode() == utc_iso(near)


def test_nan_is_refused_like_the_contract() -> None:
    import math

    import pytest

    from edge_agent.contract import ContractError

    with pytest.raises(ContractError):
        encode_data({"value": math.nan})


def test_data_that_refers_to_itself_is_refused_like_bad_json() -> None:
    import pytest

    from edge_agent.contract import ContractError

    data: dict[str, Any] = {"value": 1.0}
    data["self"] = data
    with pytest.raises(ContractError):
        encode_data(data)
    with pytest.raises(ContractError):
        encode_data(_nested(5000))
    with pytest.raises(ContractError):
        encode_data({"text": "\ud800"})
    with pytest.raises(ContractError):
        TailEncoder().encode(1.0, "reading", {"text": "\ud800"})
    assert encode_data({"after": "errors"}) == dumps({"after": "errors"})


def _nested(depth: int) -> dict[str, Any]:
    inner: dict[str, Any] = {}
    outer = inner
    for _ in range(depth):
        inner["x"] = {}
        inner = inner["x"]
    return {"nested": outer}
