"""Reading the configuration: TOML file, credentials, environment; errors mapped to keys."""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from edge_agent.config.sensors import SensorConfig
from edge_agent.config.settings import ENV_PREFIX, Settings, demo_cameras
from edge_agent.errors import ConfigError
from edge_agent.redact import Redactor

DEFAULT_CONFIG_PATH = Path("/etc/edge-agent/edge-agent.toml")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"config: file not found ({path})"]) from None
    except IsADirectoryError:
        raise ConfigError([f"config: is a directory, not a file ({path})"]) from None
    except PermissionError:
        raise ConfigError([f"config: permission denied, cannot read ({path})"]) from None
    except OSError as exc:
        raise ConfigError([f"config: cannot read: {exc.strerror} ({path})"]) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"config: not UTF-8 text at byte {exc.start} ({path})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config: invalid TOML: {exc} ({path})"]) from None


def _leaf_is_secret(model: type[BaseModel], keys: list[str]) -> bool:
    for i, key in enumerate(keys):
        field = model.model_fields.get(key)
        if field is None:
            return False
        annotation = field.annotation
        if i == len(keys) - 1:
            return annotation is SecretStr or (SecretStr in getattr(annotation, "__args__", ()))
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return False
    return False


def read_credentials(directory: Path | None) -> dict[str, Any]:
    """Secrets from systemd's `$CREDENTIALS_DIRECTORY`: a file named `mqtt.password` sets
    `mqtt.password`. Only secret fields are taken; other files (certificates) are ignored."""
    if directory is None or not directory.is_dir():
        return {}
    data: dict[str, Any] = {}
    for entry in sorted(directory.iterdir()):
        keys = entry.name.replace("__", ".").split(".")
        if not entry.is_file() or not _leaf_is_secret(Settings, keys):
            continue
        try:
            value = entry.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                [f"{'.'.join(keys)}: cannot read credential: {exc} ({entry})"]
            ) from None
        if not value:
            # The unit gives each credential an empty default (SetCredential=), so that a
            # secret nobody installed does not fail the start: empty means not set.
            continue
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return data


def _sensor_secret_fields() -> dict[str, set[str]]:
    """kind → the SecretStr fields of that sensor model."""
    models = typing.get_args(typing.get_args(SensorConfig)[0])
    return {
        typing.get_args(model.model_fields["kind"].annotation)[0]: {
            name for name in model.model_fields if _leaf_is_secret(model, [name])
        }
        for model in models
    }


def apply_sensor_credentials(directory: Path | None, file_data: dict[str, Any]) -> None:
    """Secrets of list items: a credential file `sensors.<name>.<field>` (e.g.
    `sensors.aq-api.token`, from systemd `LoadCredential=`) sets that field of the sensor
    named `<name>`, unless the config file sets it itself."""
    if directory is None or not directory.is_dir():
        return
    sensors = file_data.get("sensors")
    if not isinstance(sensors, list):
        return
    secret_fields = _sensor_secret_fields()
    by_name = {s.get("name"): s for s in sensors if isinstance(s, dict)}
    for entry in sorted(directory.iterdir()):
        if not entry.name.startswith("sensors.") or not entry.is_file():
            continue
        name, _, field = entry.name.removeprefix("sensors.").rpartition(".")
        sensor = by_name.get(name)
        if sensor is None or field not in secret_fields.get(str(sensor.get("kind")), set()):
            continue
        try:
            value = entry.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"sensors.{name}.{field}: cannot read credential: {exc}"]) from None
        if value:  # empty: not set (see read_credentials)
            sensor.setdefault(field, value)


def _deep_merge(low: dict[str, Any], high: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(low)
    for key, value in high.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _dotted(loc: tuple[int | str, ...], data: Any) -> str:
    """`('sensors', 0, 'modbus', 'port')` → `sensors[0].port` (dropping the union tag)."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if isinstance(node, dict) and part not in node and node.get("kind") == part:
            continue
        out += f".{part}" if out else part
        node = node.get(part) if isinstance(node, dict) else None
    return out or "config"


def _source_of(
    key: str, file_data: dict[str, Any], path: Path | None, env: Mapping[str, str]
) -> str:
    top = key.split("[")[0].split(".")[0]
    # The variable that set this key, or a whole section above it (`EDGE_AGENT_MQTT` as JSON).
    parts = key.split("[")[0].split(".")
    names = {name.upper(): name for name in env}
    for depth in range(len(parts), 0, -1):
        candidate = ENV_PREFIX + "__".join(parts[:depth]).upper()
        if candidate in names:
            return f"environment {names[candidate]}"
    if path is not None and top in file_data:
        return str(path)
    if path is None:
        return "embedded default"
    return f"{path}, or its default"


def _describe(error: Any) -> str:
    msg = str(error["msg"])
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    if error["type"] == "union_tag_invalid":
        ctx = error.get("ctx", {})
        return f"kind {ctx.get('tag')!r} is not known; expected one of {ctx.get('expected_tags')}"
    if error["type"] == "union_tag_not_found":
        return "'kind' is missing"
    return msg


def _problems_of(error: Any, data: Any) -> list[tuple[str, str]]:
    """(dotted key, what is wrong) for one validation error. Checks across sections (stream
    names) report `key: what` lines from the top level: split them back per key."""
    key = _dotted(tuple(error["loc"]), data)
    if error["type"] == "value_error" and not error["loc"]:
        text = str(error.get("ctx", {}).get("error", "")) or str(error["msg"])
        parts = [part.partition(": ") for part in text.splitlines()]
        if all(sep and name and " " not in name for name, sep, _ in parts):
            return [(name, what) for name, _, what in parts]
    return [(key, _describe(error))]


def load_settings(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Load and validate. `path=None` uses the default file if present, else the embedded
    default. Raises `ConfigError` listing every problem as `dotted.key: what (source)`."""
    env = os.environ if env is None else env
    if path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    file_data = read_toml(path) if path is not None else {}
    credentials_dir = env.get("CREDENTIALS_DIRECTORY")
    credentials = read_credentials(Path(credentials_dir) if credentials_dir else None)
    apply_sensor_credentials(Path(credentials_dir) if credentials_dir else None, file_data)
    data = _deep_merge(credentials, file_data)
    if path is None:
        # The demo camera belongs to the embedded default alone (the environment still wins).
        data.setdefault("cameras", demo_cameras())
    try:
        return Settings(**data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            for key, what in _problems_of(error, data):
                problems.append(f"{key}: {what} ({_source_of(key, file_data, path, env)})")
        raise ConfigError(problems) from None


def redactor(settings: Settings) -> Redactor:
    return Redactor(settings.logging.secret_query_params)


def effective_config(settings: Settings) -> dict[str, Any]:
    """The configuration as JSON-ready data: secret fields, URL userinfo and secret-looking
    query parameters masked as `**********`."""
    data: dict[str, Any] = redactor(settings).data(settings.model_dump(mode="json"))
    return data


def _hashable(value: Any) -> Any:
    if isinstance(value, SecretStr):
        # Covered by the hash without being recoverable from it.
        secret = value.get_secret_value().encode()
        return "sha256:" + hashlib.sha256(secret).hexdigest()
    return str(value)


def config_hash(settings: Settings) -> str:
    """A short stable fingerprint of the effective configuration. Secrets are covered (a
    changed password changes the hash) through their own sha256, never in clear."""
    full = settings.model_dump(mode="python")
    body = json.dumps(full, sort_keys=True, default=_hashable).encode()
    return hashlib.sha256(body).hexdigest()[:16]
