"""The one encoding step: prefix + seq + the producer's tail is byte for byte
`Envelope.encode()`, and what the contract refuses is refused the same way."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.contract import Envelope, dumps
from edge_agent.outbox.encode import TailEncoder, envelope, envelope_prefix

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
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
    # A producer's tail encoder lives for the whole run: its cached timestamp and kind text
    # must follow each new event.
    tail = _TAILS.encode(ts, kind, data)
    assert tail == TailEncoder().encode(ts, kind, data)
    spliced = envelope(envelope_prefix(node, epoch), seq, tail)
    assert spliced == Envelope(node, epoch, seq, ts, kind, data).encode()
    assert spliced.endswith(b',"data":' + dumps(data) + b"}")


_TAILS = TailEncoder()


@settings(max_examples=2000, deadline=None)
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
        TailEncoder().encode(1.0, "reading", {"value": math.nan})


def test_data_that_refers_to_itself_is_refused_like_bad_json() -> None:
    import pytest

    from edge_agent.contract import ContractError

    tails = TailEncoder()
    data: dict[str, Any] = {"value": 1.0}
    data["self"] = data
    for bad in (data, _nested(5000), {"text": "\ud800"}):
        with pytest.raises(ContractError):
            tails.encode(1.0, "reading", bad)
    with pytest.raises(TypeError):
        tails.encode(1.0, "reading", {"when": object()})
    assert tails.encode(1.0, "reading", {"after": "errors"}).endswith(b'{"after":"errors"}}')


def _nested(depth: int) -> dict[str, Any]:
    inner: dict[str, Any] = {}
    outer = inner
    for _ in range(depth):
        inner["x"] = {}
        inner = inner["x"]
    return {"nested": outer}
