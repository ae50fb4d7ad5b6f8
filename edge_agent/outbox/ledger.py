"""The seq ledger: a small file beside the outbox that a lost WAL tail cannot take back.

SQLite can lose its last commits on a power cut (under `synchronous=NORMAL`, or on storage
that lies about fsync), and a database file can be reset or go missing. The database cannot
tell either from its own content, so the ledger keeps outside it what it cannot prove:

- `reserved`: a seq is used only once the high-water mark above it is on the device, so
  no seq ever used is above the mark, whatever the database lost;
- `boot`, `synchronous` and `clean`: which boot ran the outbox last, how it committed, and
  the last seq when it closed cleanly (None while it runs);
- the commit mark: the last committed seq, written after every commit without fsync.
  A process crash keeps it (the kernel has it); only a power cut can take it back.

The record alternates between two slots (the valid one with the higher generation wins,
each CRC-checked), so a torn write never loses the last good record; the mark has a slot
of its own. `identity.judge` reads all this at start-up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

log = logging.getLogger(__name__)

SLOT_BYTES = 4096  # one record per 4 KiB block: a torn write of one cannot touch the other
MARK_OFFSET = 2 * SLOT_BYTES
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def current_boot() -> str:
    """The kernel's id of this boot ("" where there is none: then no boot is the same)."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class LedgerRecord:
    epoch: str
    reserved: int
    boot: str
    synchronous: str
    clean: int | None = None
    generation: int = 0


@dataclass(frozen=True)
class CommitMark:
    epoch: str
    seq: int


def _encode(fields: dict[str, object]) -> bytes:
    body = json.dumps(fields, sort_keys=True).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _decode(raw: bytes) -> dict[str, object] | None:
    line = raw.split(b"\n", 1)[0]
    crc, _, body = line.partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(body):
            return None
        fields = json.loads(body)
    except ValueError:
        return None
    return fields if isinstance(fields, dict) else None


def _record(fields: dict[str, object] | None) -> LedgerRecord | None:
    if fields is None:
        return None
    try:
        clean = fields.get("clean")
        return LedgerRecord(
            epoch=str(fields["epoch"]),
            reserved=int(str(fields["reserved"])),
            boot=str(fields["boot"]),
            synchronous=str(fields["synchronous"]),
            clean=None if clean is None else int(str(clean)),
            generation=int(str(fields["generation"])),
        )
    except (KeyError, ValueError):
        return None


class SeqLedger:
    """The ledger file; used by the writer thread only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.record: LedgerRecord | None = None
        self.existed = False
        self._fd: int | None = None

    def open(self) -> tuple[LedgerRecord | None, CommitMark | None]:
        """Open (creating) the file; returns the last good record and the commit mark."""
        self.existed = self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < MARK_OFFSET + SLOT_BYTES:
            # Every block allocated now: later writes overwrite them, even on a full disk.
            os.posix_fallocate(self._fd, 0, MARK_OFFSET + SLOT_BYTES)
        data = os.pread(self._fd, MARK_OFFSET + SLOT_BYTES, 0)
        slots = [_record(_decode(data[at : at + SLOT_BYTES])) for at in (0, SLOT_BYTES)]
        valid = [r for r in slots if r is not None]
        self.record = max(valid, key=lambda r: r.generation) if valid else None
        mark = _decode(data[MARK_OFFSET:])
        commit = None
        if mark is not None:
            with contextlib.suppress(KeyError, ValueError):
                commit = CommitMark(str(mark["epoch"]), int(str(mark["seq"])))
        return self.record, commit

    def save(self, record: LedgerRecord) -> None:
        """Write `record` into the older slot and wait until it is on the device."""
        generation = 0 if self.record is None else self.record.generation + 1
        record = replace(record, generation=generation)
        fields: dict[str, object] = {
            "epoch": record.epoch,
            "reserved": record.reserved,
            "boot": record.boot,
            "synchronous": record.synchronous,
            "clean": record.clean,
            "generation": record.generation,
        }
        os.pwrite(
            self._require(), _encode(fields).ljust(SLOT_BYTES, b"\0"), (generation % 2) * SLOT_BYTES
        )
        os.fdatasync(self._require())
        self.record = record

    def reserve(self, through: int) -> None:
        """Raise the high-water mark to `through` (durably) before any seq above it is used."""
        if self.record is None:
            raise RuntimeError("the seq ledger is not open")
        self.save(replace(self.record, reserved=through, clean=None))

    def mark(self, epoch: str, seq: int) -> None:
        """Note the last committed seq; no fsync (a hint that a process crash keeps)."""
        if self._fd is None:
            return
        try:
            os.pwrite(
                self._fd, _encode({"epoch": epoch, "seq": seq}).ljust(256, b"\0"), MARK_OFFSET
            )
        except OSError as exc:  # only precision is lost: the record still bounds every seq
            log.debug("outbox commit mark not written: %s", exc)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _require(self) -> int:
        if self._fd is None:
            raise RuntimeError("the seq ledger is not open")
        return self._fd
