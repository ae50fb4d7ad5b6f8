"""The page's files: a fixed list read from the package once, gzipped once.

A request names one of these by its route; nothing is looked up on the filesystem from a
URL, so no path can leave the folder.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources

FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
    "i18n/vi.json": "application/json; charset=utf-8",
    "i18n/en.json": "application/json; charset=utf-8",
}
LANGUAGES = ("vi", "en")


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    content_type: str
    etag: str


def _asset(body: bytes, content_type: str) -> Asset:
    digest = hashlib.sha256(body).hexdigest()[:20]
    return Asset(body, gzip.compress(body, 9, mtime=0), content_type, f'"{digest}"')


def read_static(name: str) -> bytes:
    return resources.files("edge_agent.web").joinpath("static", *name.split("/")).read_bytes()


class Assets:
    """Every file the page needs, with the node's default language and refresh period set
    in the HTML (data attributes the script reads; no inline script)."""

    def __init__(self, *, language: str, refresh_s: float) -> None:
        self._files: dict[str, Asset] = {}
        for name, content_type in FILES.items():
            body = read_static(name)
            if name == "index.html":
                body = body.replace(b"__LANG__", language.encode()).replace(
                    b"__REFRESH_MS__", str(round(refresh_s * 1000)).encode()
                )
            self._files[name] = _asset(body, content_type)

    def get(self, name: str) -> Asset | None:
        return self._files.get(name)

    def first_load(self, language: str) -> list[Asset]:
        """What a phone fetches on its first visit (besides `/api/status`)."""
        names = ["index.html", "style.css", "app.js", "icon.svg", f"i18n/{language}.json"]
        return [self._files[n] for n in names]
