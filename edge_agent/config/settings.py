"""The `Settings` model: every section the agent reads."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from edge_agent.config.base import Section
from edge_agent.config.cameras import CameraConfig, DetectorConfig
from edge_agent.config.environment import AqiConfig, LimitsConfig, StationExportConfig
from edge_agent.config.mqtt import MqttConfig
from edge_agent.config.outbox import OutboxConfig
from edge_agent.config.sensors import SensorConfig, SimulatedSensor, SystemSensor
from edge_agent.contract import stream_problem
from edge_agent.redact import DEFAULT_SECRET_PARAMS

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


ACCESS_CODE_HASH = re.compile(
    r"^(scrypt\$\d+\$\d+\$\d+|pbkdf2-sha256\$\d+)\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*$"
)


class WebConfig(Section):
    enabled: bool = Field(default=True, description="Serve the status page.")
    host: str = Field(
        default="127.0.0.1",
        description="Address the status page listens on; 0.0.0.0 serves the LAN.",
    )
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
    refresh_s: float = Field(
        default=5.0, ge=1.0, le=300.0, description="Seconds between the page's refreshes."
    )
    access_code_hash: SecretStr | None = Field(
        default=None,
        description=(
            "Hash of the node's access code, which unlocks camera images, event lists and the "
            "configuration on the page (make one with `python -m edge_agent.web.access`; "
            "or give it as the credential web.access_code_hash). Unset: they stay locked."
        ),
    )
    session_ttl_s: float = Field(
        default=43_200.0,
        ge=60.0,
        le=30 * 86_400.0,
        description="How long a login lasts on a phone (a restart of the agent ends it too).",
    )
    login_attempts: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Wrong access codes allowed per client within login_window_s; then 429.",
    )
    login_window_s: float = Field(
        default=300.0, ge=1.0, le=86_400.0, description="Window of login_attempts, in seconds."
    )
    max_connections: int = Field(
        default=256,
        ge=1,
        le=65_536,
        description=(
            "Concurrent connections at most (and never more than the process's file "
            "descriptor limit minus fd_reserve and a margin for accept bursts). When full, "
            "the connection that has waited longest without a request is closed."
        ),
    )
    fd_reserve: int = Field(
        default=128,
        ge=16,
        le=65_536,
        description="File descriptors kept free for the outbox, the broker link and cameras.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300.0,
        description=(
            "A connection must deliver a whole request header within this many seconds of "
            "opening, or of its previous response, or it is closed."
        ),
    )
    body_timeout_s: float = Field(
        default=10.0, gt=0, le=300.0, description="Seconds allowed to read a request body."
    )

    @field_validator("access_code_hash")
    @classmethod
    def _hash_format(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not ACCESS_CODE_HASH.match(value.get_secret_value()):
            raise ValueError(
                "not an access code hash; make one with `python -m edge_agent.web.access`"
            )
        return value


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest level logged."
    )
    format: Literal["auto", "journal", "text"] = Field(
        default="auto",
        description="'journal' drops timestamps (journald adds them); 'auto' detects journald.",
    )
    secret_query_params: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SECRET_PARAMS),
        description=(
            "URL query parameters whose values are masked in every output (logs, check-config,"
            " config.get, the status page and API, events), matched by substring without case,"
            " '-' or '_'. URL userinfo (user:password@) is always masked."
        ),
    )


def _default_sensors() -> list[SensorConfig]:
    return [
        SimulatedSensor(kind="simulated", name="sim-1", interval_s=5.0),
        SystemSensor(kind="system", name="host", interval_s=30.0),
    ]


DEMO_CLIP = Path("media/vtest.avi")


def demo_cameras() -> list[CameraConfig]:
    """The cameras of the embedded default only (no configuration file): the sample clip as
    camera `demo` when scripts/fetch-media has put it there, else none.

    Never a default of `Settings.cameras`: a node configured by a file, even one naming no
    cameras, must not publish detections from a clip it did not film."""
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
        default_factory=list,
        description="Cameras to analyse; none by default. Only the embedded default (no"
        " configuration file) plays the demo clip media/vtest.avi, when present.",
    )
    detector: DetectorConfig = Field(
        default_factory=DetectorConfig, description="On-device detection model."
    )
    web: WebConfig = Field(default_factory=WebConfig, description="Local status page.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    aqi: AqiConfig = Field(default_factory=AqiConfig, description="VN_AQI derived stream.")
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig, description="QCVN 05:2023 limit alerts."
    )
    station_export: StationExportConfig = Field(
        default_factory=StationExportConfig,
        description="Monitoring-station files (Circular 10/2021) over FTP.",
    )

    @model_validator(mode="after")
    def _stream_names(self) -> Settings:
        # Each sensor and camera publishes on data/{name}: names are unique across both and
        # keep clear of the streams the contract reserves.
        problems: list[str] = []
        seen: dict[str, str] = {}
        for section, items in (("sensors", self.sensors), ("cameras", self.cameras)):
            for index, item in enumerate(items):
                key = f"{section}[{index}].name"
                why = stream_problem(item.name)
                if why is not None:
                    problems.append(f"{key}: {why}")
                elif item.name.lower() in seen:
                    problems.append(
                        f"{key}: {item.name!r} is already the name of {seen[item.name.lower()]};"
                        " sensor and camera names share the data/{name} topics"
                    )
                else:
                    seen[item.name.lower()] = key.removesuffix(".name")
        if problems:
            raise ValueError("\n".join(problems))
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
