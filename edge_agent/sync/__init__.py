"""MQTT sync to the provincial IOC: link (paho under asyncio), publisher, commands."""

from edge_agent.sync.commands import Applied, CommandHandlers
from edge_agent.sync.component import NodeInfo, Sync
from edge_agent.sync.publisher import OutboxSource

__all__ = ["Applied", "CommandHandlers", "NodeInfo", "OutboxSource", "Sync"]
