"""Validate payloads against the published JSON Schema of the contract."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

from edge_agent.contract import decode_batch

_ROOT = json.loads(
    resources.files("edge_agent.schema").joinpath("contract.schema.json").read_text()
)


def validate(definition: str, payload: Any) -> None:
    """Raise `jsonschema.ValidationError` unless `payload` is a valid `definition`."""
    schema = {**_ROOT, "$ref": f"#/$defs/{definition}"}
    Draft202012Validator(schema).validate(payload)


def validate_message(topic: str, payload: bytes) -> str:
    """Validate anything a node publishes, chosen by topic; returns the definition used."""
    parts = topic.split("/")
    if parts[-2] == "reply":
        validate("reply", json.loads(payload))
        return "reply"
    if parts[-1] == "status":
        validate("status", json.loads(payload))
        return "status"
    if parts[-2:] == ["data", "batch"]:
        decode_batch(payload)  # decompresses and checks the framing
        from edge_agent.contract import _ZSTD_MAGIC

        if payload.startswith(_ZSTD_MAGIC):
            import zstandard

            payload = zstandard.ZstdDecompressor().decompress(payload, max_output_size=1 << 28)
        validate("batch", json.loads(payload))
        return "batch"
    if parts[-2] == "data":
        validate("envelope", json.loads(payload))
        return "envelope"
    raise AssertionError(f"node published on an unexpected topic {topic}")
