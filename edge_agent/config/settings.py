"""The `Settings` model: every section the agent reads."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from edge_agent.config.base import Section
from edge_agent.config.cameras import CameraConfig, DetectorConfig
from edge_agent.config.mqtt import MqttConfig
from edge_agent.config.outbox import OutboxConfig
from edge_agent.config.sensors import SensorConfig, SimulatedSensor, SystemSensor

ENV_PREFIX = "EDGE_AGENT_"
TOPIC_LEVEL = r"^[A-Za-z0-9_.-]+$"


def _default_node_id() -> str:
    name = socket.gethostname().split(".")[0] or "node"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)


def _default_state_dir() -> Path:
    return Path(os.environ.get("STATE_DIRECTORY", "").split(":")[0] or "./var")


class AreaConfig(Section):
    code: str = Field(
        pattern=TOPIC_LEVEL,
        description="Official code of the administrative unit (e.g. the commune or ward code).",
    )
    name: str | None = Field(
        default=None,
        max_length=200,
        description="Official name of the unit, e.g. 'Phường Ba Đình'.",
    )


class NodeConfig(Section):
    id: str = Field(
        default_factory=_default_node_id,
        pattern=TOPIC_LEVEL,
        description="Node id, unique in the province; defaults to the host name.",
    )
    district: str = Field(default="district", pattern=TOPIC_LEVEL, description="District code.")
    province: str = Field(default="province", pattern=TOPIC_LEVEL, description="Province code.")
    area: AreaConfig | None = Field(
        default=None,
        description="The administrative unit the node stands for (code and name), beside the"
        " district of its topics; the province groups its fleet by it.",
    )


class PathsConfig(Section):
    state_dir: Path = Field(
        default_factory=_default_state_dir,
        description="Where the outbox and snapshots live ($STATE_DIRECTORY under systemd).",
    )
    model_dir: Path = Field(
        default=Path("models"), description="Where the detection model is installed."
    )


class WebConfig(Section):
    enabled: bool = Field(default=True, description="Serve the status page.")
    host: str = Field(default="127.0.0.1", description="Address the status page listens on.")
    port: int = Field(default=8080, ge=0, le=65535, description="Status page port (0 = any).")
    language: Literal["vi", "en"] = Field(default="vi", description="Default page language.")
    unhealthy_after_s: float = Field(
        default=600.0,
        ge=10.0,
        description=(
            "Seconds the provincial broker may stay unreachable before the node counts as "
            "failing (/healthz 503); shorter outages only degrade it."
        ),
    )


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest level logged."
    )
    format: Literal["auto", "journal", "text"] = Field(
        default="auto",
        description="'journal' drops timestamps (journald adds them); 'auto' detects journald.",
    )


def _default_sensors() -> list[SensorConfig]:
    return [
        SimulatedSensor(kind="simulated", name="sim-1", interval_s=5.0),
        SystemSensor(kind="system", name="host", interval_s=30.0),
    ]


DEMO_CLIP = Path("media/vtest.avi")


def _default_cameras() -> list[CameraConfig]:
    # The demo plays the sample clip when scripts/fetch-media has put it there; without it
    # the embedded default simply has no camera.
    if not DEMO_CLIP.is_file():
        return []
    return [CameraConfig(name="demo", source=str(DEMO_CLIP), fps=2.0, loop=True)]


class Settings(BaseSettings):
    """The whole configuration, from env, the TOML file, credentials and defaults."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    node: NodeConfig = Field(default_factory=NodeConfig, description="Node identity.")
    paths: PathsConfig = Field(default_factory=PathsConfig, description="Files and folders.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="Provincial broker link.")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="Durable outbox.")
    sensors: list[SensorConfig] = Field(
        default_factory=_default_sensors, description="Environmental and host sensors."
    )
    cameras: list[CameraConfig] = Field(
        default_factory=_default_cameras,
        description="Cameras to analyse; default: the demo clip media/vtest.avi if present.",
    )
    detector: DetectorConfig = Field(
        default_factory=DetectorConfig, description="On-device detection model."
    )
    web: WebConfig = Field(default_factory=WebConfig, description="Local status page.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        for section, items in (("sensors", self.sensors), ("cameras", self.cameras)):
            seen: set[str] = set()
            for item in items:
                if item.name in seen:
                    raise ValueError(f"{section}: name {item.name!r} is used twice")
                seen.add(item.name)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The loader passes file and credential values as init data, merged below the
        # environment (see loader.py), so only these two sources are consulted here.
        return (env_settings, init_settings)
