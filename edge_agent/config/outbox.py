"""The durable outbox."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge_agent.config.base import Section

_DAY = 86400.0


class OutboxConfig(Section):
    max_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=64 * 1024,
        description="Cap on pending payload bytes; above it the oldest lowest-priority rows go.",
    )
    max_rows: int | None = Field(
        default=None,
        ge=100,
        description="Optional cap on pending rows, enforced like max_bytes.",
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
            "that checkpoint and eviction can still run; rebuilt once space returns (0: none). "
            "WAL checkpoints run every half reserve of pages so that releasing it is enough."
        ),
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description=(
            "SQLite synchronous mode. NORMAL is faster but may lose the last commits on power "
            "loss (never on a process crash)."
        ),
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
            "Group commit: after the first waiting event, collect others for up to this many "
            "milliseconds before the one transaction (and fsync) that commits them all."
        ),
    )
    commit_max_rows: int = Field(
        default=5000, ge=1, description="Group commit: at most this many events per transaction."
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

    def ttl_of(self, priority: int) -> float:
        """The TTL of a priority class (0 alert, 1 event, 2 reading, 3 health)."""
        return (self.ttl_alert_s, self.ttl_event_s, self.ttl_reading_s, self.ttl_health_s)[
            min(priority, 3)
        ]
