"""SQLite store-and-forward: every event is committed here before anything sends it.

Write first, drain with a cursor, delete only on acknowledgement. `Outbox` is the async
component (one writer thread, group commit); `Store` the synchronous core; `OutboxReader`
reads the file from another process while the agent runs.
"""

from edge_agent.outbox.reader import OutboxReader
from edge_agent.outbox.rows import NewEvent, OutboxRow
from edge_agent.outbox.service import Outbox
from edge_agent.outbox.store import Store

__all__ = ["NewEvent", "Outbox", "OutboxReader", "OutboxRow", "Store"]
