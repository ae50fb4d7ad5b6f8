"""End-to-end command authentication, shared by the node (verify) and the IOC (sign).

A command is signed over the canonical JSON (sorted keys, compact, UTF-8) of its fields
`v, id, node, verb, args, issued_at, expires_at`, so the broker ACL is not the only guard:
a compromised broker or a leaked IOC broker account cannot command a node.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.contract import CONTRACT_VERSION, dumps, utc_iso
from edge_agent.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

# cryptography (about 7 MiB of RSS) is imported only where an Ed25519 key is used: a node
# with an HMAC key, or none, never loads it.

SIGNED_FIELDS = ("v", "id", "node", "verb", "args", "issued_at", "expires_at")
ALG_ED25519 = "ed25519"
ALG_HMAC = "hmac-sha256"


def canonical(command: dict[str, Any]) -> bytes:
    return dumps({key: command.get(key) for key in sorted(SIGNED_FIELDS)})


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def sign_command(
    *,
    node: str,
    verb: str,
    args: dict[str, Any] | None = None,
    ttl_s: float = 300.0,
    private_key: Ed25519PrivateKey | None = None,
    hmac_key: bytes | None = None,
    command_id: str | None = None,
    issued_at: float | None = None,
) -> dict[str, Any]:
    """A signed command ready to publish on `{prefix}/{district}/{node}/cmd/{verb}`."""
    if (private_key is None) == (hmac_key is None):
        raise ValueError("sign with exactly one of an Ed25519 private key or an HMAC key")
    now = time.time() if issued_at is None else issued_at
    command: dict[str, Any] = {
        "v": CONTRACT_VERSION,
        "id": command_id or secrets.token_hex(12),
        "node": node,
        "verb": verb,
        "args": args or {},
        "issued_at": utc_iso(now),
        "expires_at": utc_iso(now + ttl_s),
    }
    body = canonical(command)
    if private_key is not None:
        command["alg"] = ALG_ED25519
        command["sig"] = _b64(private_key.sign(body))
    else:
        assert hmac_key is not None
        command["alg"] = ALG_HMAC
        command["sig"] = _b64(hmac.new(hmac_key, body, hashlib.sha256).digest())
    return command


@dataclass(frozen=True)
class Verifier:
    """Checks signatures with any configured Ed25519 public key or the node's HMAC key."""

    public_keys: tuple[Ed25519PublicKey, ...] = ()
    hmac_key: bytes | None = None

    @property
    def configured(self) -> bool:
        return bool(self.public_keys) or self.hmac_key is not None

    def verify(self, command: dict[str, Any]) -> bool:
        try:
            signature = base64.b64decode(str(command.get("sig", "")), validate=True)
            body = canonical(command)
        except (ValueError, UnicodeEncodeError):
            # Not base64, or fields no canonical JSON can carry (a lone surrogate, NaN):
            # nothing could have signed it.
            return False
        alg = command.get("alg")
        if alg == ALG_ED25519:
            if not self.public_keys:
                return False
            from cryptography.exceptions import InvalidSignature

            for key in self.public_keys:
                try:
                    key.verify(signature, body)
                    return True
                except InvalidSignature:
                    continue
            return False
        if alg == ALG_HMAC and self.hmac_key is not None:
            expected = hmac.new(self.hmac_key, body, hashlib.sha256).digest()
            return hmac.compare_digest(expected, signature)
        return False


def load_public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError([f"mqtt.commands.public_keys: cannot load {path}: {exc}"]) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError([f"mqtt.commands.public_keys: {path} is not an Ed25519 public key"])
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError([f"signing key: cannot load {path}: {exc}"]) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError([f"signing key: {path} is not an Ed25519 private key"])
    return key


def generate_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PEM, public PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public
