"""The one encoding step of an event: its envelope, without the seq, built by the producer.

`put()` encodes what follows the seq (`,"ts":..,"kind":..,"data":..}`) on the producer's
side; the writer, which learns the seq inside its transaction, only joins the epoch's prefix,
the seq's digits and that tail. The bytes equal `Envelope.encode()` (a test holds them
equal), with the contract's rules: compact, UTF-8, no NaN.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from edge_agent.contract import CONTRACT_VERSION, ContractError, dumps

# contract.dumps's settings, with one encoder kept instead of one built per call.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_SECONDS: dict[int, bytes] = {}


def envelope_prefix(node: str, epoch: str) -> bytes:
    """What precedes the seq in every envelope of one node and epoch."""
    return (
        b'{"v":%d,"node":' % CONTRACT_VERSION
        + dumps(node)
        + b',"epoch":'
        + dumps(epoch)
        + b',"seq":'
    )


def envelope(prefix: bytes, seq: int, tail: bytes) -> bytes:
    return b"%s%d%s" % (prefix, seq, tail)


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
    """Builds envelope tails. One per thread: it keeps the text of the last time and kind,
    which the events of one read share."""

    def __init__(self) -> None:
        self._kinds: dict[str, str] = {}
        self._ts = math.nan
        self._kind = ""
        self._head = ""

    def encode(self, ts: float, kind: str, data: dict[str, Any]) -> bytes:
        """The tail of an event. Raises ContractError for data the contract refuses (NaN,
        a lone surrogate, nesting too deep or circular); TypeError for what is not JSON."""
        if ts != self._ts or kind != self._kind:
            self._head = self._head_of(ts, kind)
            self._ts, self._kind = ts, kind
        try:
            return (self._head + _JSON.encode(data) + "}").encode()
        except ValueError as exc:  # NaN, a circular reference, a lone surrogate
            raise ContractError(str(exc)) from exc
        except RecursionError as exc:
            raise ContractError("data nests too deep") from exc

    def _head_of(self, ts: float, kind: str) -> str:
        middle = self._kinds.get(kind)
        if middle is None:
            if len(self._kinds) > 256:
                self._kinds.clear()
            middle = self._kinds[kind] = '","kind":' + dumps(kind).decode() + ',"data":'
        return ',"ts":"' + iso_bytes(ts).decode() + middle
