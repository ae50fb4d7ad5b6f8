"""Which epoch a start may continue: the rule that keeps an (epoch, seq) key from ever
meaning two events.

The outbox continues its epoch only when it can prove that the database holds every commit
the previous run made: it closed cleanly at the seq the file holds; or it crashed in this
same boot (the kernel kept the WAL, and the commit mark says the file holds the last
commit); or it committed with `synchronous=FULL`, so each commit was on the device before
put() returned, and no mark contradicts that. Otherwise, and whenever the file is not the
one the ledger describes (missing, reset, another store), the start opens a new epoch, seqs
continuing above every seq ever reserved, and reports a `Loss`: an alert and a gap naming
the previous epoch and what is known of the loss. docs/reliability.md states the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_agent.outbox.ledger import CommitMark, LedgerRecord


@dataclass(frozen=True)
class StoreFacts:
    """What the opened database says about itself."""

    epoch: str
    last_seq: int
    fresh: bool  # created by this start (it was missing, empty, or unreadable and ignored)
    file_existed: bool  # a non-empty file was there before this start
    upgraded: bool  # a file from before the ledger, migrated by this start


@dataclass(frozen=True)
class Loss:
    """Why this start cannot continue the previous epoch, and which seqs may be missing."""

    cause: str
    detail: str
    previous_epoch: str | None
    previous_last_seq: int | None  # the highest seq of that epoch the store still holds
    first_seq: int | None  # seqs of the previous epoch that may be missing, when known
    last_seq: int | None

    def reports(self, epoch: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The `alert` and the `gap` that open the new epoch."""
        alert = {
            "alert": "outbox_new_epoch",
            "severity": "error",
            "cause": self.cause,
            "detail": self.detail,
            "epoch": epoch,
            "previous_epoch": self.previous_epoch,
            "previous_last_seq": self.previous_last_seq,
        }
        gap = {
            "reason": "lost",
            "cause": self.cause,
            "detail": self.detail,
            "previous_epoch": self.previous_epoch,
            "previous_last_seq": self.previous_last_seq,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            # Some of those events may have reached the IOC before the loss: it knows which.
            "count": None,
        }
        return alert, gap


def highest_used(record: LedgerRecord | None, mark: CommitMark | None, store: StoreFacts) -> int:
    """A seq no earlier event can have used beyond: where a new epoch continues."""
    marked = mark.seq if mark is not None else 0
    return max(store.last_seq, marked, 0 if record is None else record.reserved)


def judge(
    record: LedgerRecord | None,
    mark: CommitMark | None,
    store: StoreFacts,
    *,
    ledger_existed: bool,
    boot: str,
) -> Loss | None:
    """None when the store may continue its epoch, else why not."""
    if record is None:
        if store.fresh and not ledger_existed:
            return None  # the first start of this node: nothing came before
        if store.upgraded and not ledger_existed:
            return None  # a file from before the ledger: trusted as the old version did
        return Loss(
            "ledger_missing" if not ledger_existed else "ledger_unreadable",
            "the seq ledger beside the outbox is missing or unreadable: the store cannot"
            " prove that it holds every commit",
            store.epoch,
            store.last_seq,
            store.last_seq + 1,
            None,
        )
    if mark is not None and mark.epoch != record.epoch:
        mark = None
    if record.epoch != store.epoch:
        if store.fresh:
            cause = "file_reset" if store.file_existed else "file_missing"
            detail = (
                "the outbox file was empty or unreadable and started afresh"
                if store.file_existed
                else "the outbox file was missing and started afresh"
            )
        else:
            cause, detail = "other_store", "the outbox file belongs to another store"
        return Loss(cause, detail, record.epoch, None, None, _bound(record, mark, boot=boot))
    if record.reserved < store.last_seq:
        return Loss(
            "ledger_behind",
            "the seq ledger is older than the outbox file",
            store.epoch,
            store.last_seq,
            store.last_seq + 1,
            None,
        )
    if record.clean is not None:
        if store.last_seq >= record.clean:
            return None
        return Loss(
            "lost_after_close",
            "the outbox file lost commits after a clean close (storage that lies about fsync?)",
            store.epoch,
            store.last_seq,
            store.last_seq + 1,
            record.clean,
        )
    behind = mark is not None and mark.seq > store.last_seq
    if boot and record.boot == boot:
        # A process crash in this boot: the kernel kept every write, so the mark is current.
        if not behind:
            return None
        assert mark is not None
        return Loss(
            "wal_tail",
            "the last commits are missing from the outbox file (its WAL lost a tail)",
            store.epoch,
            store.last_seq,
            store.last_seq + 1,
            mark.seq,
        )
    if not behind and record.synchronous == "FULL":
        return None  # every commit was on the device before put() returned
    return Loss(
        "power_cut",
        "the outbox did not close before the machine restarted"
        + (
            " and its last commits are missing"
            if behind
            else f" (synchronous={record.synchronous})"
        ),
        store.epoch,
        store.last_seq,
        store.last_seq + 1,
        record.reserved,
    )


def _bound(record: LedgerRecord, mark: CommitMark | None, *, boot: str) -> int:
    """The highest seq the previous run can have used, as tight as the ledger knows it."""
    if record.clean is not None:
        return record.clean
    if mark is not None and boot and record.boot == boot:
        return mark.seq
    return record.reserved
