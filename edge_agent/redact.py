"""Secrets masked wherever text leaves the agent: logs, check-config, `config.get`, the status
API and page, and events.

A leaf module. Two kinds of secret hide in configuration strings: URL userinfo
(`rtsp://admin:PASS@cam`) and secret-looking query parameters (`?api_key=...`). Secret fields
of the configuration are `SecretStr` and already print as the mask; this covers the rest.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

MASK = "**********"
DEFAULT_SECRET_PARAMS = ("password", "passwd", "token", "key", "api_key", "secret", "sig")

# scheme://[userinfo@]rest — userinfo is everything up to the last '@' before the path.
_URL = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<rest>[^\s\"'<>]*)")
_QUERY_PAIR = re.compile(r"(?P<sep>[?&;])(?P<key>[^=&;#\s]+)=(?P<value>[^&;#\s]*)")


def _normal(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


class Redactor:
    """Masks URL userinfo and the values of query parameters whose name contains one of
    `params` (compared without case, `-` or `_`: `apiKey`, `access_token` and `X-Sig` are
    all caught; over-masking is the safe side)."""

    def __init__(self, params: Iterable[str] = DEFAULT_SECRET_PARAMS) -> None:
        self.params = tuple(p for p in (_normal(p) for p in params) if p)

    def _secret_param(self, key: str) -> bool:
        name = _normal(key)
        return any(p in name for p in self.params)

    def _url(self, match: re.Match[str]) -> str:
        scheme, rest = match.group("scheme"), match.group("rest")
        # Userinfo runs to the last '@' not inside a query or fragment. Technicians write
        # raw passwords (with '/' or ':' in them), so this errs on masking too much.
        at = rest.rfind("@")
        if at != -1 and "?" not in rest[:at] and "#" not in rest[:at]:
            rest = MASK + rest[at:]
        if "?" in rest or ";" in rest:
            rest = _QUERY_PAIR.sub(self._pair, rest)
        return scheme + rest

    def _pair(self, match: re.Match[str]) -> str:
        if not self._secret_param(match.group("key")) or not match.group("value"):
            return match.group(0)
        return f"{match.group('sep')}{match.group('key')}={MASK}"

    def text(self, value: str) -> str:
        """`value` with every URL in it masked."""
        if "://" not in value:
            return value
        return _URL.sub(self._url, value)

    def data(self, value: Any) -> Any:
        """A copy of JSON-like `value` with every string masked."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


DEFAULT = Redactor()


def redact_url(value: str) -> str:
    """`value` masked with the default parameter list (for call sites without settings)."""
    return DEFAULT.text(value)


class RedactingFormatter(logging.Formatter):
    """A formatter whose output never carries a URL secret, whatever the caller logged
    (a driver's exception text, a library's message)."""

    def __init__(self, fmt: str, redactor: Redactor = DEFAULT) -> None:
        super().__init__(fmt)
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.text(super().format(record))
