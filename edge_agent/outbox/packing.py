"""One stored row, one or more envelopes.

The readings of one read (one sensor, one time) are committed together and stored as one
row: their envelopes joined by newlines (compact JSON never contains one), compressed
with zstd when that is worth it. A row of one event is its envelope, byte for byte, so a
row alone is what is published. Twenty readings of a Modbus device take about 300 bytes
instead of twenty rows of 200, and one b-tree cell instead of twenty index entries.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import zstandard

from edge_agent.contract import ContractError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
COMPRESS_MIN_BYTES = 256
LEVEL = 3
MAX_ROW_BYTES = 64 * 1024 * 1024
_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    # zstd objects must not be shared between threads; building one per row costs more
    # than compressing a small row.
    compressor: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True)
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def pack(envelopes: Sequence[bytes], *, compress: bool) -> bytes:
    """The payload of a row carrying `envelopes` (one: the envelope itself)."""
    if len(envelopes) == 1:
        return envelopes[0]
    joined = b"\n".join(envelopes)
    if not compress or len(joined) < COMPRESS_MIN_BYTES:
        return joined
    return bytes(_compressor().compress(joined))


def unpack(payload: bytes, count: int) -> list[bytes]:
    """The envelopes of a row that carries `count` of them; ContractError if it does not."""
    if count == 1:
        return [payload]
    if payload.startswith(ZSTD_MAGIC):
        try:
            payload = _decompressor().decompress(payload, max_output_size=MAX_ROW_BYTES)
        except zstandard.ZstdError as exc:
            raise ContractError(f"damaged row: {exc}") from exc
    envelopes = payload.split(b"\n")
    if len(envelopes) != count:
        raise ContractError(f"damaged row: {len(envelopes)} envelopes where {count} belong")
    return envelopes
