"""Envelope bytes assembled from parts on the writer thread.

The producer's thread encodes `data` once (`contract.dumps`) and builds the envelope's tail;
the writer, which only learns the seq inside the transaction, splices it between that tail
and a prefix built once per epoch. The bytes are
exactly those of `Envelope.encode()` (a test holds the two equal) at a fraction of the cost.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from edge_agent.contract import CONTRACT_VERSION, ContractError, dumps

_SECONDS: dict[int, bytes] = {}
# contract.dumps's rules (compact, UTF-8, no NaN) with one encoder kept, not one per call.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# What `_JSON.encode` builds on every call, built once: the C encoder, without the dict of
# markers for circular references (a cycle ends in RecursionError instead). Half the cost.
_C_ENCODE: Callable[[Any, int], Sequence[str]] | None = (
    None
    if c_make_encoder is None
    else c_make_encoder(None, _JSON.default, encode_basestring, None, ":", ",", False, False, False)
)


def encode_data(data: dict[str, Any]) -> bytes:
    """`contract.dumps(data)`: the same bytes and the same ContractError for NaN."""
    return _utf8(_encode_text(data))


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate: not valid in UTF-8 JSON
        raise ContractError(str(exc)) from exc


def _encode_text(data: dict[str, Any]) -> str:
    try:
        if _C_ENCODE is None or not isinstance(data, dict):
            return _JSON.encode(data)
        return "".join(_C_ENCODE(data, 0))
    except ValueError as exc:
        raise ContractError(str(exc)) from exc
    except RecursionError as exc:
        raise ContractError("data nests too deep or refers to itself") from exc


def iso_bytes(ts: float) -> bytes:
    """`contract.utc_iso(ts)` as bytes; the date and time of each second is built once."""
    if not ts >= 0:
        t = datetime.fromtimestamp(ts, tz=UTC)
        return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3].encode() + b"Z"
    # The same rounding as datetime.fromtimestamp: microseconds rounded half to even.
    fraction, whole = math.modf(ts)
    micro = round(fraction * 1e6)
    second = int(whole)
    if micro >= 1_000_000:
        micro -= 1_000_000
        second += 1
    head = _SECONDS.get(second)
    if head is None:
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        t = datetime.fromtimestamp(second, tz=UTC)
        head = _SECONDS.setdefault(
            second,
            b"%04d-%02d-%02dT%02d:%02d:%02d" % (t.year, t.month, t.day, t.hour, t.minute, t.second),
        )
    return b"%s.%03dZ" % (head, micro // 1000)


class TailEncoder:
    """What follows the seq in an envelope (`,"ts":..,"kind":..,"data":..}`): all a producer
    knows, so it builds this on its own thread and the writer only splices in the seq."""

    def __init__(self) -> None:
        self._kinds: dict[str, str] = {}
        # The events of one burst share their timestamp and kind: their text is built once.
        self._ts = math.nan
        self._kind = ""
        self._head = ""

    def tail(self, ts: float, kind: str, body: bytes) -> bytes:
        """The tail of an event whose `data` is already encoded as `body`."""
        return _utf8(self._head_of(ts, kind)) + body + b"}"

    def encode(self, ts: float, kind: str, data: dict[str, Any]) -> bytes:
        """The tail of an event, `data` encoded on the way (one UTF-8 pass for the whole).

        Raises ContractError for data `contract.dumps` refuses."""
        if ts == self._ts and kind == self._kind:  # the common case, inline
            return _utf8(self._head + _encode_text(data) + "}")
        return _utf8(self._head_of(ts, kind) + _encode_text(data) + "}")

    def _head_of(self, ts: float, kind: str) -> str:
        if ts == self._ts and kind == self._kind:
            return self._head
        middle = self._kinds.get(kind)
        if middle is None:
            if len(self._kinds) > 256:
                self._kinds.clear()
            middle = self._kinds[kind] = '","kind":' + dumps(kind).decode() + ',"data":'
        head = ',"ts":"' + iso_bytes(ts).decode() + middle
        self._ts, self._kind, self._head = ts, kind, head
        return head


class EnvelopeEncoder:
    def __init__(self, node: str, epoch: str) -> None:
        self.prefix = (
            b'{"v":%d,"node":' % CONTRACT_VERSION
            + dumps(node)
            + b',"epoch":'
            + dumps(epoch)
            + b',"seq":'
        )
        self._tails = TailEncoder()

    def encode(self, seq: int, ts: float, kind: str, body: bytes) -> bytes:
        """The envelope of an event whose `data` is already encoded as `body`."""
        return self.splice(seq, self._tails.tail(ts, kind, body))

    def splice(self, seq: int, tail: bytes) -> bytes:
        """The envelope of an event whose tail (`TailEncoder`) is built."""
        return b"%s%d%s" % (self.prefix, seq, tail)
