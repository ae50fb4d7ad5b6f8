"""The durable outbox."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge_agent.config.base import Section


class OutboxConfig(Section):
    max_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=64 * 1024,
        description="Cap on pending payload bytes; above it the oldest lowest-priority rows go.",
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description=(
            "SQLite synchronous mode. NORMAL is faster but may lose the last commits on power "
            "loss (never on a process crash)."
        ),
    )
