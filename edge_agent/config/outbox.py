"""The durable outbox."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from edge_agent.config.base import Section

_DAY = 86400.0


class OutboxConfig(Section):
    max_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=64 * 1024,
        description=(
            "Cap on pending bytes as stored (packed and compressed); above it the oldest "
            "lowest-priority rows go."
        ),
    )
    max_rows: int | None = Field(
        default=None,
        ge=100,
        description="Optional cap on pending events, enforced like max_bytes.",
    )
    max_file_bytes: int | None = Field(
        default=None,
        ge=1024 * 1024,
        description=(
            "Optional hard cap on the database file (SQLite max_page_count). Reaching it is "
            "handled like a full disk: writes wait, the outbox reports degraded and evicts."
        ),
    )
    disk_reserve_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=0,
        description=(
            "Ballast file kept beside the database and released when the disk is full, so "
            "that checkpoint and eviction can still run; created whenever there is room for "
            "it, its absence is a degraded state (0: none, and no such state)."
        ),
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description=(
            "SQLite synchronous mode. FULL: every commit is on the device before put() "
            "returns. NORMAL: the WAL is flushed at checkpoints and by the kernel; a power "
            "cut may lose the last commits (never a process crash), and the next start then "
            "opens a new epoch and reports the possibly lost seqs as a gap."
        ),
    )
    page_size: int = Field(
        default=1024,
        ge=512,
        le=65536,
        description=(
            "SQLite page size in bytes for a new database file (a power of two; an existing "
            "file keeps its own). Smaller pages write fewer bytes per commit."
        ),
    )
    checkpoint_pages: int = Field(
        default=1000,
        ge=16,
        description=(
            "WAL pages after which a commit checkpoints the WAL into the database file; "
            "capped at half disk_reserve_bytes so that releasing the reserve always lets a "
            "checkpoint finish. Larger: fewer rewrites of the same pages, a larger WAL."
        ),
    )
    row_max_events: int = Field(
        default=64,
        ge=1,
        le=1000,
        description=(
            "The readings of one read (same sensor, time and kind, committed together) share "
            "one stored row, up to this many; 1 stores every event in a row of its own."
        ),
    )
    compression: Literal["zstd", "none"] = Field(
        default="zstd",
        description="Compression of rows that carry several readings.",
    )
    ttl_alert_s: float = Field(
        default=180 * _DAY, ge=60, description="Seconds an alert or gap row may wait unsent."
    )
    ttl_event_s: float = Field(
        default=60 * _DAY,
        ge=60,
        description="Seconds a detection, count or camera event may wait unsent.",
    )
    ttl_reading_s: float = Field(
        default=60 * _DAY, ge=60, description="Seconds a sensor reading may wait unsent."
    )
    ttl_health_s: float = Field(
        default=7 * _DAY, ge=60, description="Seconds a health snapshot may wait unsent."
    )
    commit_window_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        description=(
            "Group commit for alerts and gaps: after the first waiting one, collect others "
            "for up to this many milliseconds before the one transaction that commits them."
        ),
    )
    commit_window_event_ms: float = Field(
        default=2.0,
        ge=0,
        le=5000,
        description=(
            "Commit window for detections, counts and camera events: put() returns after "
            "its commit, at most this much later than alone. Longer: fewer writes."
        ),
    )
    commit_window_reading_ms: float = Field(
        default=250.0,
        ge=0,
        le=5000,
        description=(
            "Commit window for sensor readings (see commit_window_event_ms), and never more "
            "than a quarter of the interval between a sensor's reads, so a poller, which "
            "waits for its read's commit, keeps its pace."
        ),
    )
    commit_window_health_ms: float = Field(
        default=250.0,
        ge=0,
        le=5000,
        description="Commit window for health snapshots (see commit_window_event_ms).",
    )
    ack_window_ms: float = Field(
        default=1000.0,
        ge=0,
        le=10000,
        description=(
            "Deletes of acknowledged rows wait up to this long for a transaction to ride "
            "along with; ack() returns once they are committed. Longer: fewer writes."
        ),
    )
    commit_max_rows: int = Field(
        default=5000,
        ge=1,
        description="Group commit: at most this many events and acks per transaction.",
    )
    max_queued_puts: int = Field(
        default=10000,
        ge=1,
        description=(
            "Producers' calls waiting for a commit; beyond it they wait, so memory stays bounded "
            "while the disk is slow or full."
        ),
    )
    expire_interval_s: float = Field(
        default=60.0, gt=0, description="Seconds between sweeps that remove expired rows."
    )
    writer_stall_s: float = Field(
        default=60.0,
        ge=1.0,
        le=3600.0,
        description=(
            "Seconds the writer thread may go without turning (a hung disk) before the outbox "
            "is failing and the systemd watchdog is withheld."
        ),
    )
    stats_interval_s: float = Field(
        default=5.0, gt=0, description="Seconds between updates of the outbox health facts."
    )

    @field_validator("page_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("must be a power of two (512, 1024, ... 65536)")
        return value

    def ttl_of(self, priority: int) -> float:
        """The TTL of a priority class (0 alert, 1 event, 2 reading, 3 health)."""
        return (self.ttl_alert_s, self.ttl_event_s, self.ttl_reading_s, self.ttl_health_s)[
            min(priority, 3)
        ]

    def window_of(self, priority: int) -> float:
        """The commit window of a priority class, in seconds."""
        windows = (
            self.commit_window_ms,
            self.commit_window_event_ms,
            self.commit_window_reading_ms,
            self.commit_window_health_ms,
        )
        return windows[min(priority, 3)] / 1000
