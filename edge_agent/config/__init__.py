"""Configuration: one `Settings` model from env, the TOML file, credentials and defaults."""

from edge_agent.config.cameras import CameraConfig, DetectorConfig
from edge_agent.config.loader import (
    DEFAULT_CONFIG_PATH,
    config_hash,
    effective_config,
    load_settings,
)
from edge_agent.config.mqtt import MqttConfig, TlsConfig
from edge_agent.config.outbox import OutboxConfig
from edge_agent.config.sensors import SensorConfig, SimulatedSensor, SystemSensor
from edge_agent.config.settings import (
    LoggingConfig,
    NodeConfig,
    PathsConfig,
    Settings,
    WebConfig,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "CameraConfig",
    "DetectorConfig",
    "LoggingConfig",
    "MqttConfig",
    "NodeConfig",
    "OutboxConfig",
    "PathsConfig",
    "SensorConfig",
    "Settings",
    "SimulatedSensor",
    "SystemSensor",
    "TlsConfig",
    "WebConfig",
    "config_hash",
    "effective_config",
    "load_settings",
]
