"""Poll a URL and pick numeric values out of its JSON answer with RFC 6901 pointers."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from typing import Any

from edge_agent.config.sensors import HttpJsonSensor
from edge_agent.errors import SensorError
from edge_agent.sensors.base import Sample

MAX_BODY_BYTES = 1 << 20


class PointerError(LookupError):
    pass


def resolve_pointer(document: Any, pointer: str) -> Any:
    """The value at an RFC 6901 JSON pointer (`""` is the whole document)."""
    if pointer == "":
        return document
    node = document
    for token in pointer[1:].split("/"):
        key = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            if key not in node:
                raise PointerError(f"{pointer}: no key {key!r}")
            node = node[key]
        elif isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise PointerError(f"{pointer}: no index {key!r}")
            node = node[int(key)]
        else:
            raise PointerError(f"{pointer}: {key!r} is inside a {type(node).__name__}")
    return node


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return math.nan
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


class HttpJsonDriver:
    def __init__(self, config: HttpJsonSensor) -> None:
        self.config = config
        self._problems: list[str] = []

    def facts(self) -> dict[str, Any]:
        return {"value_problems": list(self._problems)}

    def _fetch(self) -> Any:
        headers = {"Accept": "application/json", "User-Agent": "edge-agent"}
        if self.config.token is not None:
            headers["Authorization"] = f"Bearer {self.config.token.get_secret_value()}"
        request = urllib.request.Request(self.config.url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s * 0.8) as answer:
                body = answer.read(MAX_BODY_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise SensorError(f"{self.config.url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SensorError(f"{self.config.url}: {reason}") from exc
        if len(body) > MAX_BODY_BYTES:
            raise SensorError(f"{self.config.url}: answer larger than {MAX_BODY_BYTES} bytes")
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SensorError(f"{self.config.url}: answer is not JSON ({exc})") from exc

    def read(self) -> list[Sample]:
        document = self._fetch()
        samples = []
        problems = []
        for spec in self.config.values:
            try:
                raw = _number(resolve_pointer(document, spec.pointer))
            except PointerError as exc:
                problems.append(str(exc))
                raw = math.nan
            # a missing or non-numeric value travels as NaN, which validation marks 'bad'
            samples.append(Sample(spec.quantity, raw * spec.scale + spec.offset, spec.unit))
        self._problems = problems
        return samples

    def close(self) -> None:
        pass
