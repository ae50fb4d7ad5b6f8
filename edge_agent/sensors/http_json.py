"""Poll a URL and pick numeric values out of its JSON answer with RFC 6901 pointers."""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from typing import Any

from edge_agent.config.sensors import HttpJsonSensor
from edge_agent.errors import SensorError
from edge_agent.redact import redact_url
from edge_agent.sensors.base import Sample

MAX_BODY_BYTES = 1 << 20
CHUNK_BYTES = 64 * 1024


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


def _number(value: Any) -> tuple[float, str | None]:
    """The value as a float, and the text it came from when that is not a number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value), None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return math.nan, value[:64]
        return number, (None if math.isfinite(number) else value[:64])
    return math.nan, json.dumps(value)[:64]


def _read_until(answer: Any, deadline: float, where: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            raise SensorError(f"{where}: answer not complete within the read deadline")
        chunk = answer.read1(CHUNK_BYTES)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise SensorError(f"{where}: answer larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)


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
        where = redact_url(self.config.url)
        # One deadline for the whole answer: a socket timeout alone restarts with every byte,
        # so a server dripping its body would hold the read for ever.
        budget = self.config.timeout_s * 0.8
        deadline = time.monotonic() + budget
        try:
            with urllib.request.urlopen(request, timeout=budget) as answer:
                body = _read_until(answer, deadline, where)
        except urllib.error.HTTPError as exc:
            raise SensorError(f"{where}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SensorError(f"{where}: {reason}") from exc
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SensorError(f"{where}: answer is not JSON ({exc})") from exc

    def read(self) -> list[Sample]:
        document = self._fetch()
        samples = []
        problems = []
        for spec in self.config.values:
            try:
                number, text = _number(resolve_pointer(document, spec.pointer))
            except PointerError as exc:
                problems.append(str(exc))
                number, text = math.nan, None
            # a missing or non-numeric value travels as NaN, which validation marks 'bad',
            # with the text the server sent kept as `raw`
            value = number * spec.scale + spec.offset
            samples.append(Sample(spec.quantity, value, spec.unit, raw=text))
        self._problems = problems
        return samples

    def close(self) -> None:
        pass
