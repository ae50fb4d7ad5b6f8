"""The node's access code: its hash, login sessions and the per-client login limit.

The code is stored only as a salted scrypt (or PBKDF2) hash, in the config file or as the
credential `web.access_code_hash`. A login that matches gets a random session token in an
HttpOnly SameSite=Strict cookie; the server keeps only the token's SHA-256, in memory (a
restart logs everyone out). Wrong codes are counted per client address, and past
`login_attempts` within `login_window_s` every attempt is refused before any hashing.

Make a hash with `python -m edge_agent.web.access` (it asks for the code twice).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import secrets
import sys
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
MIN_CODE_LENGTH = 6
MAX_CODE_LENGTH = 128


class AccessCodeFormatError(ValueError):
    pass


@dataclass(frozen=True)
class AccessCode:
    """A parsed `scrypt$N$r$p$salt$hash` or `pbkdf2-sha256$iterations$salt$hash`."""

    scheme: str
    params: tuple[int, ...]
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> AccessCode:
        parts = text.split("$")
        try:
            if parts[0] == "scrypt" and len(parts) == 6:
                n, r, p = (int(x) for x in parts[1:4])
                if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16:
                    raise AccessCodeFormatError("scrypt parameters out of range")
                return cls("scrypt", (n, r, p), _b64(parts[4]), _b64(parts[5]))
            if parts[0] == "pbkdf2-sha256" and len(parts) == 4:
                iterations = int(parts[1])
                if iterations < 100_000:
                    raise AccessCodeFormatError("pbkdf2 needs at least 100000 iterations")
                return cls("pbkdf2-sha256", (iterations,), _b64(parts[2]), _b64(parts[3]))
        except (ValueError, TypeError) as exc:
            raise AccessCodeFormatError(f"not an access code hash: {exc}") from None
        raise AccessCodeFormatError("not an access code hash")

    @classmethod
    def create(cls, code: str) -> AccessCode:
        salt = secrets.token_bytes(16)
        digest = hashlib.scrypt(
            code.encode(),
            salt=salt,
            n=SCRYPT_N,
            r=SCRYPT_R,
            p=SCRYPT_P,
            maxmem=SCRYPT_MAXMEM,
            dklen=32,
        )
        return cls("scrypt", (SCRYPT_N, SCRYPT_R, SCRYPT_P), salt, digest)

    def encode(self) -> str:
        salt = base64.b64encode(self.salt).decode()
        digest = base64.b64encode(self.digest).decode()
        return "$".join([self.scheme, *(str(p) for p in self.params), salt, digest])

    def verify(self, code: str) -> bool:
        """Blocking (tens of milliseconds by design): call it off the event loop."""
        if not 0 < len(code) <= MAX_CODE_LENGTH:
            return False
        if self.scheme == "scrypt":
            n, r, p = self.params
            candidate = hashlib.scrypt(
                code.encode(),
                salt=self.salt,
                n=n,
                r=r,
                p=p,
                maxmem=SCRYPT_MAXMEM,
                dklen=len(self.digest),
            )
        else:
            candidate = hashlib.pbkdf2_hmac(
                "sha256", code.encode(), self.salt, self.params[0], dklen=len(self.digest)
            )
        return hmac.compare_digest(candidate, self.digest)


def _b64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


class Sessions:
    """Random tokens of logged-in browsers, kept as their SHA-256, bounded in number."""

    def __init__(self, *, ttl_s: float, max_sessions: int = 64) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._expiry: OrderedDict[bytes, float] = OrderedDict()

    def open(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        token = secrets.token_urlsafe(32)
        self._expiry[_key(token)] = now + self.ttl_s
        while len(self._expiry) > self.max_sessions:
            self._expiry.popitem(last=False)
        return token

    def valid(self, token: str | None, now: float | None = None) -> bool:
        if not token or len(token) > 128:
            return False
        now = time.monotonic() if now is None else now
        key = _key(token)
        expiry = self._expiry.get(key)
        if expiry is None:
            return False
        if expiry <= now:
            del self._expiry[key]
            return False
        return True

    def close(self, token: str | None) -> None:
        if token:
            self._expiry.pop(_key(token), None)

    def expire(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for key in [k for k, expiry in self._expiry.items() if expiry <= now]:
            del self._expiry[key]

    def __len__(self) -> int:
        return len(self._expiry)


def _key(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class LoginLimiter:
    """Wrong codes per client address within a sliding window; a bounded table of clients."""

    def __init__(self, *, attempts: int, window_s: float, max_clients: int = 4096) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self.max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str, now: float | None = None) -> float:
        """Seconds until `client` may try again (0: it may try now)."""
        now = time.monotonic() if now is None else now
        failures = self._failures.get(client)
        if failures is None:
            return 0.0
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return 0.0
        if len(failures) < self.attempts:
            return 0.0
        return max(0.0, failures[0] + self.window_s - now)

    def failed(self, client: str, now: float | None = None) -> int:
        """Record a wrong code; returns how many the client has in the window."""
        now = time.monotonic() if now is None else now
        failures = self._failures.pop(client, None) or deque(maxlen=self.attempts)
        failures.append(now)
        self._failures[client] = failures
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
        return len(failures)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


def main(argv: list[str] | None = None) -> int:
    """Ask for a code twice and print its hash for `[web] access_code_hash`."""
    del argv
    code = getpass.getpass("access code: ")
    if len(code) < MIN_CODE_LENGTH or len(code) > MAX_CODE_LENGTH:
        print(f"the code needs {MIN_CODE_LENGTH} to {MAX_CODE_LENGTH} characters", file=sys.stderr)
        return 1
    if getpass.getpass("again: ") != code:
        print("the two codes differ", file=sys.stderr)
        return 1
    print(AccessCode.create(code).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
